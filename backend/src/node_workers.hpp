// Starting one flyt-worker process per session, and the worker's "I listen" report.
//
// Ready protocol: the node passes the write end of a pipe as `--ready-fd 3`; the worker writes the
// endpoint it really listens on (with the real port for tcp://host:0) followed by '\n' and closes
// the fd. EOF before a newline means the worker died before it listened.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

#include "flyt/backend/session_handler.hpp"
#include "flyt/backend/session_limits.hpp"
#include "flyt/transport/error.hpp"

namespace flyt::backend {

// flyt-worker's exit status when it released its session for idleness (worker_main.cpp).
inline constexpr int kWorkerExitIdle = 4;

struct WorkerLaunch {
  std::string workerPath;        // the flyt-worker executable
  std::string listen;            // endpoint the worker listens on ("tcp://h:0" allowed)
  std::uint64_t sessionId = 0;   // the only session the worker admits
  ExecutorKind executor = ExecutorKind::kAuto;
  std::string configPath;        // node.toml passed on as --config; empty for none
  SessionLimits limits;          // what the session may use (defaults: the whole GPU, no timeout)
};

// A started worker whose ready report is still to be read. Owns readFd and, until
// releaseControlFd(), controlFd (the write end of the control pipe; closing it leaves the worker
// running with its last limits).
class SpawnedWorker {
 public:
  SpawnedWorker(pid_t pid, int readFd, int controlFd) : m_pid(pid), m_readFd(readFd), m_controlFd(controlFd) {}
  ~SpawnedWorker();
  SpawnedWorker(SpawnedWorker&& other) noexcept;
  SpawnedWorker& operator=(SpawnedWorker&&) = delete;
  SpawnedWorker(const SpawnedWorker&) = delete;
  SpawnedWorker& operator=(const SpawnedWorker&) = delete;

  [[nodiscard]] pid_t pid() const noexcept { return m_pid; }

  // Hands the control pipe's write end (non-blocking, close-on-exec) to the caller, who closes it;
  // -1 when already released. Keep it for the session's life to change its limits (sendMemoryLimit).
  [[nodiscard]] int releaseControlFd() noexcept { return std::exchange(m_controlFd, -1); }

  // Waits up to `timeout` for the worker's endpoint line. kTimeout when it stays silent,
  // kUnavailable when it exits (closes the pipe) first. Does not kill or reap the worker.
  [[nodiscard]] transport::Result<std::string> awaitReady(std::chrono::milliseconds timeout);

 private:
  pid_t m_pid;
  int m_readFd;
  int m_controlFd;
};

// fork+exec of `launch.workerPath` in its own process group (a Ctrl-C at the node's terminal reaches
// the node, which then stops its workers in order), with the signal mask and dispositions reset and
// no descriptor but 0-2, the ready pipe (as fd 3) and the control pipe (as fd 4), and the
// environment of the node plus what `launch.limits` asks for (see the top of this file). Only async-signal-safe calls run between fork
// and exec, so it may be called from any thread. The caller reaps the child.
[[nodiscard]] transport::Result<SpawnedWorker> spawnWorker(const WorkerLaunch& launch);

// Writes `memory-limit <bytes>` to a worker's control pipe (SpawnedWorker::releaseControlFd). Never
// blocks: kUnavailable when the worker is gone (EPIPE; SIGPIPE must be ignored, as flyt-node does)
// or not reading (a full pipe). Thread-safe for distinct descriptors; a line is written atomically.
[[nodiscard]] transport::Result<void> sendMemoryLimit(int controlFd, std::uint64_t bytes);

// "exited with status 3", "was killed by signal 9 (Killed)": a waitpid status for logs.
[[nodiscard]] std::string describeWaitStatus(int status);

}  // namespace flyt::backend
