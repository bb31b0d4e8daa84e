#include "ratio_reporter.hpp"

#include <fmt/format.h>

#include <cstdio>

namespace flyt::bench {
namespace {

std::string humanBytes(const std::string& arg) {
  char* end = nullptr;
  const unsigned long long n = std::strtoull(arg.c_str(), &end, 10);
  if (end == arg.c_str() || *end != '\0') return arg;
  if (n >= (1ULL << 30) && n % (1ULL << 30) == 0) return fmt::format("{} GiB", n >> 30);
  if (n >= (1ULL << 20) && n % (1ULL << 20) == 0) return fmt::format("{} MiB", n >> 20);
  if (n >= (1ULL << 10) && n % (1ULL << 10) == 0) return fmt::format("{} KiB", n >> 10);
  return fmt::format("{} B", n);
}

}  // namespace

void RatioReporter::addBaseline(const std::string& group, const std::string& variant,
                                bool throughput) {
  m_baselines[group] = Baseline{variant, throughput};
}

void RatioReporter::ReportRuns(const std::vector<Run>& runs) {
  ConsoleReporter::ReportRuns(runs);
  for (const auto& run : runs) {
    // With --benchmark_repetitions, compare medians; without, the single iteration run.
    const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
    if (run.error_occurred || (run.run_type != Run::RT_Iteration && !median)) continue;
    // function_name is "<group>/<variant>"; args holds the size argument, if any.
    const std::string& name = run.run_name.function_name;
    const auto slash = name.find('/');
    if (slash == std::string::npos) continue;
    Entry entry;
    entry.group = name.substr(0, slash);
    entry.variant = name.substr(slash + 1);
    entry.arg = run.run_name.args;
    const auto it = run.counters.find("bytes_per_second");
    entry.bytesPerSecond = it == run.counters.end() ? 0.0 : double(it->second);
    entry.secondsPerIteration = run.GetAdjustedRealTime() /
                                benchmark::GetTimeUnitMultiplier(run.time_unit);
    // A median replaces the repetitions it summarises.
    std::erase_if(m_entries, [&](const Entry& e) {
      return e.group == entry.group && e.variant == entry.variant && e.arg == entry.arg;
    });
    m_entries.push_back(entry);
  }
}

void RatioReporter::Finalize() {
  ConsoleReporter::Finalize();
  std::string table;
  for (const auto& entry : m_entries) {
    const auto base = m_baselines.find(entry.group);
    if (base == m_baselines.end() || base->second.variant == entry.variant) continue;
    const Entry* ref = nullptr;
    for (const auto& candidate : m_entries) {
      if (candidate.group == entry.group && candidate.variant == base->second.variant &&
          candidate.arg == entry.arg) {
        ref = &candidate;
      }
    }
    if (ref == nullptr) continue;
    double ratio = 0;
    std::string value;
    if (base->second.throughput) {
      if (ref->bytesPerSecond <= 0) continue;
      ratio = entry.bytesPerSecond / ref->bytesPerSecond;
      value = fmt::format("{:8.2f} GB/s vs {:8.2f} GB/s", entry.bytesPerSecond / 1e9,
                          ref->bytesPerSecond / 1e9);
    } else {
      if (entry.secondsPerIteration <= 0) continue;
      ratio = ref->secondsPerIteration / entry.secondsPerIteration;
      value = fmt::format("{:8.2f} us   vs {:8.2f} us  ", entry.secondsPerIteration * 1e6,
                          ref->secondsPerIteration * 1e6);
    }
    table += fmt::format("{:<10} {:<14} {:>8}  {}  {:5.2f}x {}\n", entry.group, entry.variant,
                         humanBytes(entry.arg), value, ratio, base->second.variant);
  }
  if (!table.empty()) {
    std::fputs("\nRatios to the baselines of this run (>1.00x: faster than the baseline)\n", stdout);
    std::fputs(fmt::format("{:<10} {:<14} {:>8}  {:<34}  {}\n", "group", "variant", "size",
                           "measured vs baseline", "ratio").c_str(), stdout);
    std::fputs(table.c_str(), stdout);
  }
}

}  // namespace flyt::bench
