#include "model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace flyt::flytbench {

const char* testName(Test test) {
  switch (test) {
    case Test::kMemcpy:
      return "memcpy";
    case Test::kLatency:
      return "latency";
    case Test::kTorch:
      return "torch";
  }
  return "memcpy";
}

std::vector<Point> pointsOf(const Options& options) {
  std::vector<Point> points;
  if (options.test == Test::kTorch) {
    for (const auto& name : options.points) points.push_back(Point{.name = name});
    return points;
  }
  if (options.test == Test::kLatency) {
    for (const char* name : {"d2h_8b", "stream_query", "launch_enqueue", "launch_sync", "malloc_free_1mib"}) {
      points.push_back(Point{.name = name});
    }
    return points;
  }
  for (const auto& memory : options.memories) {
    for (const auto& direction : options.directions) {
      if (direction == "d2d") continue;
      for (auto bytes : options.sizes) points.push_back({direction, memory, bytes, ""});
    }
  }
  if (std::ranges::find(options.directions, "d2d") != options.directions.end()) {
    for (auto bytes : options.sizes) points.push_back({"d2d", "device", bytes, ""});
  }
  return points;
}

std::string pointLabel(const Point& point) {
  if (!point.name.empty()) return point.name;
  return fmt::format("{} {} {}", point.direction, point.memory, sizeLabel(point.bytes));
}

std::string pointMeaning(const std::string& point) {
  if (point == "d2h_8b") return "cudaMemcpy of 8 bytes device to host";
  if (point == "stream_query") return "cudaStreamQuery on an idle stream";
  if (point == "launch_enqueue") return "empty kernel launch, queued (1024, then one sync)";
  if (point == "launch_sync") return "empty kernel launch + cudaStreamSynchronize";
  if (point == "malloc_free_1mib") return "cudaMalloc 1 MiB + cudaFree";
  if (point == "resnet50_infer_b32") return "ResNet-50 inference, batch 32, fp32, no_grad";
  if (point == "resnet50_train_b32") return "ResNet-50 training step, batch 32, SGD";
  return "";
}

std::expected<std::uint64_t, std::string> parseSize(const std::string& text) {
  std::uint64_t value = 0;
  const char* end = text.data() + text.size();
  const auto parsed = std::from_chars(text.data(), end, value);
  if (parsed.ec != std::errc{} || parsed.ptr == text.data()) {
    return std::unexpected(fmt::format("'{}' is not a size (examples: 4096, 4K, 64M, 1G)", text));
  }
  std::string suffix(parsed.ptr, end);
  std::ranges::transform(suffix, suffix.begin(), [](unsigned char c) { return char(std::toupper(c)); });
  int shift = 0;
  if (suffix == "K" || suffix == "KB" || suffix == "KIB")
    shift = 10;
  else if (suffix == "M" || suffix == "MB" || suffix == "MIB")
    shift = 20;
  else if (suffix == "G" || suffix == "GB" || suffix == "GIB")
    shift = 30;
  else if (!suffix.empty() && suffix != "B") {
    return std::unexpected(fmt::format("'{}': the size suffixes are K, M and G (powers of 1024)", text));
  }
  constexpr std::uint64_t kLargest = 64ull << 30;  // more than any GPU's memory today
  if (value == 0 || value > (kLargest >> shift)) {
    return std::unexpected(fmt::format("'{}': sizes go from 1 byte to 64G", text));
  }
  return value << shift;
}

std::string sizeLabel(std::uint64_t bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB"};
  int unit = 0;
  while (unit < 3 && bytes >= 1024 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++unit;
  }
  return fmt::format("{} {}", bytes, kUnits[unit]);
}

const char* statusName(Status status) {
  switch (status) {
    case Status::kOk:
      return "ok";
    case Status::kSkipped:
      return "skipped";
    case Status::kFailed:
      return "failed";
  }
  return "failed";
}

const TransportRun* RunResult::transport(const std::string& name) const {
  for (const auto& run : transports) {
    if (run.name == name) return &run;
  }
  return nullptr;
}

bool RunResult::anyFailed() const {
  if (interrupted) return true;
  for (const auto& [bytes, raw] : rawSocket) {
    if (!raw.error.empty()) return true;
  }
  for (const auto& run : transports) {
    if (run.status == Status::kFailed) return true;
    for (const auto& m : run.measurements) {
      if (m.status == Status::kFailed) return true;
    }
  }
  return false;
}

}  // namespace flyt::flytbench

namespace flyt::flytbench {

std::string formatValue(double value) {
  if (value >= 100) return fmt::format("{:.0f}", value);
  if (value >= 10) return fmt::format("{:.1f}", value);
  if (value >= 1) return fmt::format("{:.2f}", value);
  return fmt::format("{:.3f}", value);
}

}  // namespace flyt::flytbench
