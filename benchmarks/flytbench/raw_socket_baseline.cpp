#include "raw_socket_baseline.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <latch>
#include <memory>
#include <thread>
#include <vector>

#include "../raw_socket.hpp"

namespace flyt::flytbench {

namespace {

using Clock = std::chrono::steady_clock;

struct PairRun {
  bench::SocketPair sockets;
  std::unique_ptr<std::byte[]> received;
  Clock::time_point start, end;
  std::int64_t iterations = 0;
  bool failed = false;
};

void receive(PairRun& run, std::uint64_t bytes) {
  const std::byte ack{1};
  while (bench::readAll(run.sockets.server, run.received.get(), bytes)) {
    if (!bench::writeAll(run.sockets.server, &ack, 1)) break;
  }
}

void send(PairRun& run, const std::byte* data, std::uint64_t bytes, double minTime, std::latch& go) {
  std::byte ack{};
  const auto transfer = [&] {
    return bench::writeAll(run.sockets.client, data, bytes) && bench::readAll(run.sockets.client, &ack, 1);
  };
  run.failed = !transfer();  // warm-up
  go.arrive_and_wait();
  const auto least = std::chrono::duration<double>(minTime);
  run.start = Clock::now();
  run.end = run.start;
  while (!run.failed && (run.iterations < 3 || run.end - run.start < least)) {
    run.failed = !transfer();
    ++run.iterations;
    run.end = Clock::now();
  }
  ::shutdown(run.sockets.client, SHUT_WR);  // the receiver reads end of file and stops
}

}  // namespace

RawSocketResult measureRawSocket(std::uint64_t bytes, int pairs, double minTime) {
  RawSocketResult result{.bytes = bytes};
  std::vector<PairRun> runs(static_cast<std::size_t>(pairs));
  for (auto& run : runs) {
    auto sockets = bench::connectedLoopbackPair();
    if (!sockets) {
      result.error = sockets.error().describe();
      for (auto& r : runs) {
        if (r.sockets.client >= 0) ::close(r.sockets.client);
        if (r.sockets.server >= 0) ::close(r.sockets.server);
      }
      return result;
    }
    run.sockets = *sockets;
    run.received = std::make_unique_for_overwrite<std::byte[]>(bytes);
    std::memset(run.received.get(), 0, bytes);  // touched: page faults are not measured
  }
  auto data = std::make_unique_for_overwrite<std::byte[]>(bytes);
  std::memset(data.get(), 0x5a, bytes);
  {
    std::latch go(pairs);
    std::vector<std::jthread> threads;
    for (auto& run : runs) {
      threads.emplace_back([&run, bytes] { receive(run, bytes); });
      threads.emplace_back([&run, &data, bytes, minTime, &go] { send(run, data.get(), bytes, minTime, go); });
    }
  }
  auto first = runs.front().start;
  auto last = runs.front().end;
  double moved = 0;
  for (auto& run : runs) {
    ::close(run.sockets.client);
    ::close(run.sockets.server);
    if (run.failed) result.error = "a send or receive on the loopback socket pair failed";
    first = std::min(first, run.start);
    last = std::max(last, run.end);
    moved += double(bytes) * double(run.iterations);
    result.iterations += run.iterations;
  }
  result.seconds = std::chrono::duration<double>(last - first).count();
  if (result.error.empty() && result.seconds > 0) result.gbps = moved / result.seconds / 1e9;
  return result;
}

}  // namespace flyt::flytbench
