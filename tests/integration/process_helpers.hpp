// Real child processes for the integration tests: spawn with captured stdout and stderr, wait with
// a bound, look processes up in /proc. No mocks: these drive the real flyt, flyt-node and
// flyt-worker executables.
#pragma once

#include "host_roudi_lock.hpp"

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace flyt::test {


// A child process. stdin is a pipe the test may close; stdout is a pipe read line by line;
// stderr goes to a file (readable at any time). The destructor SIGKILLs and reaps a child still
// running.
class Process {
 public:
  explicit Process(std::vector<std::string> argv, std::vector<std::string> extraEnv = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  [[nodiscard]] pid_t pid() const { return m_pid; }
  // The next stdout line (without '\n'), or nullopt at EOF or after `timeout`.
  [[nodiscard]] std::optional<std::string> readLine(std::chrono::milliseconds timeout);
  // Everything the child wrote to stdout until it closed it (bounded by `timeout`).
  [[nodiscard]] std::string readAll(std::chrono::milliseconds timeout);
  // Everything the child wrote to stderr so far.
  [[nodiscard]] std::string stderrText() const;
  // Writes `line` and a newline to the child's stdin; false when the child no longer reads it.
  bool writeLine(const std::string& line);
  void closeStdin();
  void signal(int sig) const;
  // The child's waitpid status once it exits within `timeout`; nullopt if it is still running.
  [[nodiscard]] std::optional<int> wait(std::chrono::milliseconds timeout);

 private:
  pid_t m_pid = -1;
  int m_stdin = -1;
  int m_stdout = -1;
  std::string m_stderrPath;
  std::string m_buffered;
  bool m_reaped = false;
};

// Polls `condition` every 20 ms until it holds or `timeout` passes; returns its last value.
bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

// True while /proc/<pid> exists (a zombie still counts: it has not been reaped).
[[nodiscard]] bool processExists(pid_t pid);

// Pids of processes whose command line contains `needle` (the caller excluded).
[[nodiscard]] std::vector<pid_t> processesWithArgument(const std::string& needle);

// Names in /dev/shm starting with `prefix`.
[[nodiscard]] std::vector<std::string> shmFiles(const std::string& prefix);

// A flyt-node (FLYT_NODE_PATH) on the GPU stand-in with a private shm name and a loopback TCP port,
// for tests that speak the protocol themselves; `options` are more flyt-node options (e.g.
// --session-memory-limit). ready() waits for its "serving" line.
struct StandinNode {
  std::string shm, tcp;
  std::unique_ptr<Process> process;

  StandinNode(const std::string& nodePath, const std::string& prefix, std::vector<std::string> env = {},
              std::vector<std::string> options = {});
  [[nodiscard]] bool ready();
  [[nodiscard]] std::string log() const { return process->stderrText(); }
  [[nodiscard]] const std::string& endpoint(const std::string& transport) const {
    return transport == "shm" ? shm : tcp;
  }
};

}  // namespace flyt::test
