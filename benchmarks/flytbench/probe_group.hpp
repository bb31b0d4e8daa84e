// N probe processes of one transport, driven in lockstep through the probe's line protocol
// (probe.cu describes it): flytbench waits for a line from each, then answers all of them.
#pragma once

#include <chrono>
#include <deque>
#include <expected>
#include <string>
#include <string_view>
#include <vector>

#include "flat_json.hpp"
#include "process.hpp"

namespace flyt::flytbench {

class ProbeGroup {
 public:
  using Deadline = std::chrono::steady_clock::time_point;

  // Starts `count` processes of `argv` with `env`, each in its own process group. Not thread-safe;
  // the destructor kills whatever still runs.
  [[nodiscard]] static std::expected<ProbeGroup, std::string> start(const std::vector<std::string>& argv,
                                                                    const std::vector<std::string>& env,
                                                                    int count);

  // The next protocol line of every probe, in client order. Fails, naming the probe and quoting the
  // last lines of its stderr, when one ends first, writes a line that is not a JSON object, the
  // deadline passes or flytbench is interrupted.
  [[nodiscard]] std::expected<std::vector<FlatJson>, std::string> nextFromEach(Deadline deadline);
  // Writes `line` and a newline to every probe's stdin.
  [[nodiscard]] std::expected<void, std::string> sendAll(std::string_view line);
  // Closes the probes' stdin and waits until `deadline` for all to exit; fails when one exits
  // non-zero or has to be killed.
  [[nodiscard]] std::expected<void, std::string> finish(Deadline deadline);
  // Tells every probe to quit and waits up to `grace` for it; kills what is left.
  void stop(std::chrono::milliseconds grace);
  // Kills every probe's process group now.
  void kill();

  [[nodiscard]] int size() const { return int(m_probes.size()); }

 private:
  struct Probe {
    Child child;
    std::string outPartial, errPartial;
    std::deque<std::string> lines;    // protocol lines received, not yet taken
    std::deque<std::string> errTail;  // the last lines of its stderr
  };

  explicit ProbeGroup(std::vector<Probe> probes) : m_probes(std::move(probes)) {}
  // Reads what arrives within `timeout` (less when a signal arrives).
  void pump(std::chrono::milliseconds timeout);
  void readFrom(Probe& probe, bool errors);
  // "probe 2/3 exited with status 1: <stderr tail>" (reaps it, briefly waiting for its stderr).
  std::string describeEnd(std::size_t index, std::string_view what);

  std::vector<Probe> m_probes;
};

}  // namespace flyt::flytbench
