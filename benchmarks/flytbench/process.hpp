// Child processes of flytbench (probes, `flyt run`, the private node) and Ctrl-C handling.
//
// Every child runs in its own process group, so that flytbench can stop it with whatever it started
// (flyt run's probe, the node's workers). A node gets SIGTERM when flytbench dies
// (PR_SET_PDEATHSIG). A probe does not: `flyt run` would pass the signal on and the probe could die
// inside a shared-memory send, which can leave the node's iceoryx port locked and the node unable
// to stop (README, known limitations). A probe ends through its pipes instead: end of input when it
// waits for "go", a failed write when it reports.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <expected>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace flyt::flytbench {

// SIGINT, SIGTERM and SIGHUP set a flag instead of ending flytbench, so that it can stop its
// children first; SIGPIPE is ignored (a probe that died shows up as a failed write instead).
void installInterruptHandlers();
// True once one of those signals arrived; blocking waits in flytbench return early then.
[[nodiscard]] bool interrupted();
// The signal that interrupted, 0 if none.
[[nodiscard]] int interruptSignal();

// The environment of this process, without the variables named in `unset`, with `set` (NAME=VALUE)
// added or replacing.
[[nodiscard]] std::vector<std::string> environmentWith(const std::vector<std::string>& unset,
                                                       const std::vector<std::string>& set);

// The directory of the running executable.
[[nodiscard]] std::filesystem::path selfDirectory();

// `program` as an absolute path: itself when it names a path (it contains a '/'), else the first
// executable of that name in PATH's directories; nullopt when there is no such executable file.
[[nodiscard]] std::optional<std::filesystem::path> tryFindProgram(const std::string& program);

// True when the CUDA driver (libcuda.so.1) loads and sees a device.
[[nodiscard]] bool gpuPresent();

class Child {
 public:
  enum class Stdio {
    kPipes,    // stdin, stdout and stderr are pipes to flytbench (a probe; no PDEATHSIG)
    kReadyFd,  // stdin /dev/null, stdout and stderr to `logFd`, fd 3 a pipe (a node's --ready-fd;
               // PDEATHSIG)
  };

  // fork + exec of argv[0] (a path) with `env`. The message names the program when it fails; a
  // program that cannot be executed exits 127 in the child.
  [[nodiscard]] static std::expected<Child, std::string> spawn(const std::vector<std::string>& argv,
                                                               const std::vector<std::string>& env,
                                                               Stdio stdio, int logFd = -1);

  Child(Child&& other) noexcept;
  Child& operator=(Child&&) = delete;
  // Kills the process group (SIGKILL) when the child was not reaped yet.
  ~Child();

  [[nodiscard]] pid_t pid() const { return m_pid; }
  // Parent ends of the pipes, -1 when absent or closed.
  [[nodiscard]] int input() const { return m_in; }
  [[nodiscard]] int output() const { return m_out; }
  [[nodiscard]] int errors() const { return m_err; }
  [[nodiscard]] int ready() const { return m_ready; }
  void closeInput();
  void closeOutput();
  void closeErrors();
  void closeReady();

  void signalGroup(int sig) const;
  // Waits up to `timeout` for the child to exit; its wait status, or nullopt while it runs.
  std::optional<int> reap(std::chrono::milliseconds timeout);
  // SIGTERM to the group, SIGKILL after `grace`; reaps. The wait status.
  int stop(std::chrono::milliseconds grace);
  [[nodiscard]] std::optional<int> status() const { return m_status; }

 private:
  Child() = default;

  pid_t m_pid = -1;
  int m_in = -1, m_out = -1, m_err = -1, m_ready = -1;
  std::optional<int> m_status;
};

// "exited with status 3", "was killed by SIGKILL".
[[nodiscard]] std::string describeWaitStatus(int status);

}  // namespace flyt::flytbench
