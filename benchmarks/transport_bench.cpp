// flyt_transport_bench: the transport layer against its raw baselines, in one run.
//
//   RoundTrip/<variant>        empty call: client sends a one-call batch, server answers; latency
//                              baseline: raw_tcp (a one-byte ping-pong on a loopback TCP socket pair)
//   Payload/<variant>/<bytes>  inline payload through a channel, one acknowledgement per transfer;
//                              baseline: raw_socket (the same bytes through a plain loopback socket)
//   Region/<variant>/<bytes>   bytes staged through the data region's slot ring, pipelined;
//                              baseline: memcpy (single-thread memcpy between two buffers)
//
// Servers run on a thread of this process (same code path as a separate process: the shm and TCP
// channels do not know whether the peer is a thread or a process). After the usual table, the
// program prints each variant's ratio to its group's baseline.
#include <benchmark/benchmark.h>

#include "bench_channels.hpp"
#include "ratio_reporter.hpp"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  flyt::bench::RatioReporter reporter;
  reporter.addBaseline("RoundTrip", "raw_tcp", /*throughput=*/false);
  reporter.addBaseline("Payload", "raw_socket", /*throughput=*/true);
  reporter.addBaseline("Region", "memcpy", /*throughput=*/true);
  auto registered = flyt::bench::registerTransportBenchmarks();
  if (!registered) {
    std::fprintf(stderr, "flyt_transport_bench: %s\n", registered.error().describe().c_str());
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
