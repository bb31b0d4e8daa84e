#include "probe_group.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace flyt::flytbench {

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kTailLines = 12;
constexpr std::size_t kLineLimit = 64 * 1024;  // a longer line is cut: neither side writes one

// The stand-in prints a line per kernel launch (moved to stderr by the probe); thousands of them
// would push the interesting lines out of the tail.
bool worthKeeping(std::string_view line) {
  return !line.empty() && !line.starts_with("flyt-standin: launch");
}

std::chrono::milliseconds until(Clock::time_point deadline) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
}

}  // namespace

std::expected<ProbeGroup, std::string> ProbeGroup::start(const std::vector<std::string>& argv,
                                                         const std::vector<std::string>& env, int count) {
  std::vector<Probe> probes;
  for (int i = 0; i < count; ++i) {
    auto child = Child::spawn(argv, env, Child::Stdio::kPipes);
    if (!child) return std::unexpected(fmt::format("cannot start {}: {}", argv[0], child.error()));
    probes.push_back(Probe{std::move(*child), {}, {}, {}, {}});
  }
  return ProbeGroup(std::move(probes));
}

void ProbeGroup::readFrom(Probe& probe, bool errors) {
  const int fd = errors ? probe.child.errors() : probe.child.output();
  std::string& partial = errors ? probe.errPartial : probe.outPartial;
  char buffer[65536];
  for (;;) {
    const ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && errno == EAGAIN) return;
    if (got <= 0) {  // end of file: what is left is the last line
      if (!partial.empty()) (errors ? probe.errTail : probe.lines).push_back(std::move(partial));
      partial.clear();
      errors ? probe.child.closeErrors() : probe.child.closeOutput();
      return;
    }
    partial.append(buffer, std::size_t(got));
    for (std::size_t newline; (newline = partial.find('\n')) != std::string::npos;) {
      std::string line = partial.substr(0, newline);
      partial.erase(0, newline + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!errors) {
        if (!line.empty()) probe.lines.push_back(std::move(line));
      } else if (worthKeeping(line)) {
        probe.errTail.push_back(line.substr(0, 400));
        if (probe.errTail.size() > kTailLines) probe.errTail.pop_front();
      }
    }
    if (partial.size() > kLineLimit) {
      if (errors)
        partial.clear();
      else
        probe.lines.push_back(std::exchange(partial, {}));
    }
  }
}

void ProbeGroup::pump(std::chrono::milliseconds timeout) {
  std::vector<pollfd> fds;
  std::vector<std::pair<Probe*, bool>> owners;
  for (auto& probe : m_probes) {
    for (bool errors : {false, true}) {
      const int fd = errors ? probe.child.errors() : probe.child.output();
      if (fd < 0) continue;
      fds.push_back({fd, POLLIN, 0});
      owners.emplace_back(&probe, errors);
    }
  }
  if (fds.empty()) {
    std::this_thread::sleep_for(std::min(timeout, std::chrono::milliseconds(50)));
    return;
  }
  // EINTR (a Ctrl-C) returns early; the callers look at interrupted().
  if (::poll(fds.data(), fds.size(), int(std::max(timeout, 0ms).count())) <= 0) return;
  for (std::size_t i = 0; i < fds.size(); ++i) {
    if (fds[i].revents != 0) readFrom(*owners[i].first, owners[i].second);
  }
}

std::string ProbeGroup::describeEnd(std::size_t index, std::string_view what) {
  Probe& probe = m_probes[index];
  // Its last words on stderr may still be in the pipe.
  for (auto deadline = Clock::now() + 1s; probe.child.errors() >= 0 && Clock::now() < deadline;) {
    pollfd pfd{probe.child.errors(), POLLIN, 0};
    if (::poll(&pfd, 1, 100) > 0) readFrom(probe, true);
  }
  std::string text = fmt::format("probe {}/{} {}", index + 1, m_probes.size(), what);
  if (auto status = probe.child.reap(2s)) {
    text += fmt::format(" ({})", describeWaitStatus(*status));
    if (WIFEXITED(*status) && WEXITSTATUS(*status) == 125) text += ", flyt run failed";
    if (WIFEXITED(*status) && WEXITSTATUS(*status) == 127)
      text += ", a program could not be executed or loaded";
  }
  if (!probe.errTail.empty()) {
    text += "; its stderr ended with:";
    for (const auto& line : probe.errTail) text += "\n    " + line;
  }
  return text;
}

std::expected<std::vector<FlatJson>, std::string> ProbeGroup::nextFromEach(Deadline deadline) {
  for (;;) {
    bool all = true;
    for (std::size_t i = 0; i < m_probes.size(); ++i) {
      Probe& probe = m_probes[i];
      if (!probe.lines.empty()) continue;
      all = false;
      if (probe.child.output() < 0) return std::unexpected(describeEnd(i, "ended without answering"));
    }
    if (all) break;
    if (interrupted()) return std::unexpected("interrupted");
    if (Clock::now() >= deadline) {
      for (std::size_t i = 0; i < m_probes.size(); ++i) {
        if (m_probes[i].lines.empty()) {
          m_probes[i].child.signalGroup(SIGKILL);
          return std::unexpected(describeEnd(i, "did not answer in time and was killed"));
        }
      }
    }
    pump(std::min(until(deadline), std::chrono::milliseconds(200)));
  }
  std::vector<FlatJson> messages;
  for (std::size_t i = 0; i < m_probes.size(); ++i) {
    std::string line = std::move(m_probes[i].lines.front());
    m_probes[i].lines.pop_front();
    auto parsed = FlatJson::parse(line);
    if (!parsed) {
      return std::unexpected(fmt::format("probe {}/{} wrote a line that is not a protocol message: {}", i + 1,
                                         m_probes.size(), parsed.error()));
    }
    messages.push_back(std::move(*parsed));
  }
  return messages;
}

std::expected<void, std::string> ProbeGroup::sendAll(std::string_view line) {
  const std::string text = std::string(line) + '\n';
  for (std::size_t i = 0; i < m_probes.size(); ++i) {
    const int fd = m_probes[i].child.input();
    ssize_t written = -1;
    do {
      written = fd < 0 ? -1 : ::write(fd, text.data(), text.size());
    } while (written < 0 && errno == EINTR && !interrupted());
    if (written != ssize_t(text.size())) {
      return std::unexpected(describeEnd(i, "no longer takes commands"));
    }
  }
  return {};
}

std::expected<void, std::string> ProbeGroup::finish(Deadline deadline) {
  for (auto& probe : m_probes) probe.child.closeInput();
  for (std::size_t i = 0; i < m_probes.size(); ++i) {
    Probe& probe = m_probes[i];
    // Keep reading: a probe blocked on a full stderr pipe would never exit.
    while (!probe.child.reap(0ms)) {
      if (interrupted()) return std::unexpected("interrupted");
      if (Clock::now() >= deadline) {
        probe.child.signalGroup(SIGKILL);
        return std::unexpected(describeEnd(i, "did not exit at the end and was killed"));
      }
      pump(50ms);
    }
    const int status = *probe.child.status();
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      return std::unexpected(describeEnd(i, "failed at the end"));
  }
  return {};
}

void ProbeGroup::stop(std::chrono::milliseconds grace) {
  // "quit" ends a probe that waits for "go"; a measuring one reads it after its point. Either way it
  // leaves through exit(), and Flyt's runtime closes its session: a probe killed inside a
  // shared-memory send could leave the node's iceoryx port locked (README, known limitations).
  for (auto& probe : m_probes) {
    if (probe.child.input() >= 0) (void)!::write(probe.child.input(), "quit\n", 5);
    probe.child.closeInput();
  }
  const auto deadline = Clock::now() + grace;
  for (auto& probe : m_probes) {
    while (!probe.child.reap(0ms) && Clock::now() < deadline) pump(50ms);
  }
  kill();
}

void ProbeGroup::kill() {
  for (auto& probe : m_probes) {
    probe.child.signalGroup(SIGKILL);
    (void)probe.child.reap(2s);
  }
}

}  // namespace flyt::flytbench
