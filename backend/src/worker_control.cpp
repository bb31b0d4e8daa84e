#include "worker_control.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <string>
#include <utility>

#include "flyt/transport/log.hpp"

namespace flyt::backend {
namespace {

constexpr std::size_t kMaxLine = 128;

spdlog::logger& log() { return flyt::logger("worker"); }

}  // namespace

std::optional<ControlCommand> parseControlLine(std::string_view line) {
  constexpr std::string_view kMemoryLimit = "memory-limit ";
  if (!line.starts_with(kMemoryLimit)) return std::nullopt;
  line.remove_prefix(kMemoryLimit.size());
  ControlCommand command;
  auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), command.memoryLimit);
  if (ec != std::errc() || end != line.data() + line.size() || line.empty()) return std::nullopt;
  return command;
}

ControlReader::ControlReader(int fd, std::shared_ptr<MemoryQuota> quota, std::uint64_t sessionId, int nodePidFd)
    : m_fd(fd), m_nodePidFd(nodePidFd), m_quota(std::move(quota)), m_sessionId(sessionId) {
  if (::pipe2(m_stop, O_CLOEXEC) != 0) {
    // Without a wake-up the thread could not be joined: read nothing rather than hang at exit.
    log().warn("session {:016x}: no control pipe reader ({})", m_sessionId, std::strerror(errno));
    return;
  }
  m_thread = std::thread([this] { run(); });
}

ControlReader::~ControlReader() {
  if (m_thread.joinable()) {
    (void)!::write(m_stop[1], "x", 1);
    m_thread.join();
  }
  for (int fd : {m_fd, m_nodePidFd, m_stop[0], m_stop[1]}) {
    if (fd >= 0) ::close(fd);
  }
}

void ControlReader::run() {
  std::string pending;
  bool skipping = false;  // inside an overlong line, until its '\n'
  bool reading = true;    // until the control pipe's EOF; the node is watched on
  for (;;) {
    // A negative fd is skipped by poll: a closed control pipe or no pidfd.
    pollfd fds[3] = {{reading ? m_fd : -1, POLLIN, 0}, {m_stop[0], POLLIN, 0}, {m_nodePidFd, POLLIN, 0}};
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      log().warn("session {:016x}: polling the control pipe: {}", m_sessionId, std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    if (fds[2].revents != 0) {
      log().warn("session {:016x}: the node that started this worker is gone: ending the session", m_sessionId);
      ::kill(::getpid(), SIGTERM);
      return;
    }
    if (fds[0].revents == 0) continue;
    char buffer[256];
    const ssize_t got = ::read(m_fd, buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      // The node closed its end (or went away): the session keeps its last limits.
      log().debug("session {:016x}: control pipe closed", m_sessionId);
      if (m_nodePidFd < 0) return;
      reading = false;
      continue;
    }
    pending.append(buffer, std::size_t(got));
    for (auto end = pending.find('\n'); end != std::string::npos; end = pending.find('\n')) {
      const std::string line = pending.substr(0, end);
      pending.erase(0, end + 1);
      if (std::exchange(skipping, false)) continue;
      auto command = parseControlLine(line);
      if (!command) {
        log().warn("session {:016x}: ignoring control line '{}'", m_sessionId, line);
        continue;
      }
      const std::uint64_t before = m_quota->limit();
      m_quota->setLimit(command->memoryLimit);
      log().info("session {:016x}: memory limit {} -> {} bytes ({} in use)", m_sessionId, before,
                 command->memoryLimit, m_quota->used());
    }
    if (pending.size() > kMaxLine) {
      log().warn("session {:016x}: ignoring an overlong control line", m_sessionId);
      pending.clear();
      skipping = true;
    }
  }
}

}  // namespace flyt::backend
