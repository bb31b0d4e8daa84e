// A Google Benchmark reporter that prints the usual console table and then, for every benchmark
// that names a baseline, the ratio of its throughput (or latency) to that baseline measured in the
// same run.
//
// Naming convention: "<group>/<variant>/<arg>" — e.g. "Payload/tcp/1048576" and
// "Payload/raw_socket/1048576". A variant is compared with the baseline variant registered for its
// group via addBaseline(group, baselineVariant).
#pragma once

#include <benchmark/benchmark.h>

#include <map>
#include <string>
#include <vector>

namespace flyt::bench {

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  // Throughput groups compare bytes_per_second (higher is better); latency groups compare time per
  // iteration (lower is better); the printed ratio is always "variant vs baseline" such that > 1.0
  // means the variant is faster.
  void addBaseline(const std::string& group, const std::string& variant, bool throughput);

  void ReportRuns(const std::vector<Run>& runs) override;
  void Finalize() override;

 private:
  struct Entry {
    std::string group, variant, arg;
    double bytesPerSecond = 0;
    double secondsPerIteration = 0;
  };
  struct Baseline {
    std::string variant;
    bool throughput;
  };
  std::map<std::string, Baseline> m_baselines;
  std::vector<Entry> m_entries;
};

}  // namespace flyt::bench
