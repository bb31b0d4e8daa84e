// What flytbench measures and what it found: options, points, per-transport results. Plain data,
// filled by the sweep (sweep.hpp) and read by the report writers (report.hpp, svg_plot.hpp).
#pragma once

#include <cstdint>
#include <expected>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "flat_json.hpp"

namespace flyt::flytbench {

enum class Test { kMemcpy, kLatency, kTorch };
// "memcpy", "latency", "torch".
[[nodiscard]] const char* testName(Test test);

// The points of `flytbench torch`, in the order they are measured (torch_probe.py).
inline const std::vector<std::string> kTorchPoints{"resnet50_infer_b32", "resnet50_train_b32"};

struct Options {
  Test test = Test::kMemcpy;
  std::vector<std::uint64_t> sizes;         // bytes (memcpy)
  std::vector<std::string> directions;      // h2d, d2h, d2d (memcpy)
  std::vector<std::string> memories;        // pinned, pageable (memcpy)
  std::vector<std::string> transports;      // native, shm, tcp; in this order
  int clients = 1;                          // probe processes per transport, released together
  double minTime = 0.2;                     // seconds each probe measures a point, at least
  std::string serverShm, serverTcp;         // empty: the private node's
  std::string executor = "auto";            // the private node's
  std::string jsonPath, csvPath, plotPath;  // "-" is stdout; empty: not written
  bool verify = true;
  std::string api = "runtime";              // the cut the shm and tcp probes run through: runtime, driver
                                            // (always driver for torch)
  // torch only:
  std::vector<std::string> points;  // a subset of kTorchPoints, in its order
  int iterations = 10;              // measured per point, at least
  int syncEvery = 1;                // iterations queued between two torch.cuda.synchronize()
  int warmup = 5;                   // untimed iterations per point before it is measured
  std::string python;               // the interpreter: an absolute path once main() has found it
};

// One measured point: a copy (direction, memory, bytes) or a latency point (name).
struct Point {
  std::string direction, memory;  // memory is "device" for d2d
  std::uint64_t bytes = 0;
  std::string name;  // latency: d2h_8b, stream_query, ...; torch: resnet50_infer_b32, ...
};

// The points of a run in the probe's order (probe.cu: per memory, per host direction, per size;
// then d2d per size; latency points in their fixed order).
[[nodiscard]] std::vector<Point> pointsOf(const Options& options);
// "h2d pinned 64 MiB" / "launch_sync".
[[nodiscard]] std::string pointLabel(const Point& point);
// One line on what a latency or torch point measures.
[[nodiscard]] std::string pointMeaning(const std::string& point);

// "4K", "1M", "3G", "4096", "64KiB" -> bytes (powers of 1024).
[[nodiscard]] std::expected<std::uint64_t, std::string> parseSize(const std::string& text);
// 4096 -> "4 KiB", 3 MiB -> "3 MiB", 1000 -> "1000 B".
[[nodiscard]] std::string sizeLabel(std::uint64_t bytes);

enum class Status { kOk, kFailed, kSkipped };
[[nodiscard]] const char* statusName(Status status);

// One point through one transport, over all clients.
struct Measurement {
  Status status = Status::kFailed;
  std::string note;               // why it failed or was skipped
  double gbps = 0;                // memcpy: sum(bytes * iterations) / (last end - first start)
  double us = 0;                  // latency, torch: mean of the clients' microseconds per call
                                  // (per iteration)
  // torch through Flyt: forwarded calls, calls waited for (round trips) and messages per iteration,
  // the mean of the clients'; nullopt natively (NVIDIA's driver does not count).
  std::optional<double> calls, waited, messages;
  std::int64_t iterations = 0;    // summed over clients
  double seconds = 0;             // last end - first start
  std::optional<bool> verified;   // all clients verified (nullopt: not verified)
  std::vector<FlatJson> clients;  // the clients' result lines as received
};

// One transport's part of the run.
struct TransportRun {
  std::string name;    // native, shm, tcp
  std::string server;  // the node endpoint; empty for native
  std::string cudart;  // the runtime the probes reported
  std::string driver;  // the driver library the probes reported (what proves the driver cut)
  std::string device;
  Status status = Status::kOk;  // kSkipped: no device (native); kFailed: did not start
  std::string note;
  std::vector<FlatJson> infos;            // every client's info (or nodevice) line
  std::vector<Measurement> measurements;  // one per point, in point order
};

// The raw loopback TCP socket baseline for one size.
struct RawSocketResult {
  std::uint64_t bytes = 0;
  double gbps = 0;
  std::int64_t iterations = 0;
  double seconds = 0;
  std::string error;  // non-empty: failed
};

struct RunResult {
  Options options;
  std::string date;                        // local time, ISO 8601
  std::string device;                      // the first device any transport reported
  std::string flytRuntime;                 // Flyt's libcudart.so.13 (<dir>/../lib), or with --api driver
                                           // its libcuda.so.1 (<dir>/../lib/driver)
  std::vector<std::string> nodeEndpoints;  // the private node's; empty when none was started
  std::vector<Point> points;
  std::vector<TransportRun> transports;
  std::map<std::uint64_t, RawSocketResult> rawSocket;  // by size; only with tcp (memcpy)
  bool interrupted = false;

  [[nodiscard]] const TransportRun* transport(const std::string& name) const;
  [[nodiscard]] bool anyFailed() const;
};

}  // namespace flyt::flytbench

namespace flyt::flytbench {

// "52.1", "3.05", "0.812": three significant digits for tables and progress lines.
[[nodiscard]] std::string formatValue(double value);

}  // namespace flyt::flytbench
