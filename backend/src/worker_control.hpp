// The worker's end of the control pipe (protocol: node_workers.hpp): a thread that reads the node's
// lines and applies them to the running session.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <thread>

#include "flyt/backend/memory_quota.hpp"

namespace flyt::backend {

// One understood control line.
struct ControlCommand {
  std::uint64_t memoryLimit = 0;  // `memory-limit <bytes>`
};

// Parses one line without its '\n'; nullopt when it is not a command of the protocol.
[[nodiscard]] std::optional<ControlCommand> parseControlLine(std::string_view line);

// Reads `fd` (owned from construction) on its own thread until EOF or destruction, setting the
// quota's limit for every `memory-limit` line. Unknown or overlong lines are logged and skipped; EOF
// or a read error ends the reading only. The destructor stops the thread and closes `fd`.
//
// `nodePidFd` (owned; -1 for none) is a pidfd of the process that started the worker (the node).
// When it becomes readable the node has died, however it died (SIGKILL included): the thread sends
// the worker SIGTERM, as the node's own stop() would have, so that no worker outlives its node and
// the session's GPU memory is released by the worker's exit. A pidfd, not PR_SET_PDEATHSIG: the
// node forks workers on short-lived handshake threads, and the death signal follows the forking
// thread, not the process.
class ControlReader {
 public:
  ControlReader(int fd, std::shared_ptr<MemoryQuota> quota, std::uint64_t sessionId, int nodePidFd = -1);
  ~ControlReader();
  ControlReader(const ControlReader&) = delete;
  ControlReader& operator=(const ControlReader&) = delete;

 private:
  void run();

  int m_fd;
  int m_nodePidFd;
  int m_stop[2] = {-1, -1};  // a self-pipe: the destructor's wake-up
  std::shared_ptr<MemoryQuota> m_quota;
  std::uint64_t m_sessionId;
  std::thread m_thread;
};

}  // namespace flyt::backend
