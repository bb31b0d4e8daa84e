#include "node_workers.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <string_view>
#include <vector>

#include "flyt/transport/sys.hpp"
#include "node_config.hpp"

namespace flyt::backend {
namespace {

using transport::Errc;
using transport::fail;
using Clock = std::chrono::steady_clock;

constexpr int kReadyFdInChild = 3;
constexpr int kControlFdInChild = 4;
constexpr std::size_t kMaxReadyLine = 512;

// Runs in the forked child: async-signal-safe calls only, then exec; never returns.
[[noreturn]] void execWorker(char* const* argv, char* const* envp, int readyFd, int controlFd) {
  ::setpgid(0, 0);
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD}) ::signal(sig, SIG_DFL);
  // Both ends first move above 4, so that neither dup2 overwrites the other's source; dup2 clears
  // close-on-exec on the copies.
  const int ready = ::fcntl(readyFd, F_DUPFD_CLOEXEC, kControlFdInChild + 1);
  const int control = ::fcntl(controlFd, F_DUPFD_CLOEXEC, kControlFdInChild + 1);
  if (ready < 0 || control < 0 || ::dup2(ready, kReadyFdInChild) < 0 ||
      ::dup2(control, kControlFdInChild) < 0) {
    ::_exit(127);
  }
  ::close_range(kControlFdInChild + 1, ~0U, 0);
  ::execve(argv[0], argv, envp);
  ::_exit(127);
}

std::vector<std::string> workerArguments(const WorkerLaunch& launch) {
  std::vector<std::string> args = {launch.workerPath,
                                   "--listen", launch.listen,
                                   "--session", fmt::format("{:016x}", launch.sessionId),
                                   "--ready-fd", std::to_string(kReadyFdInChild),
                                   "--control-fd", std::to_string(kControlFdInChild),
                                   "--executor", std::string(executorName(launch.executor))};
  if (!launch.configPath.empty()) {
    args.push_back("--config");
    args.push_back(launch.configPath);
  }
  const SessionLimits& limits = launch.limits;
  if (limits.memoryBytes != 0) {
    args.push_back("--memory-limit");
    args.push_back(std::to_string(limits.memoryBytes));
  }
  if (limits.sharesSms()) {
    args.push_back("--sm-percent");
    args.push_back(std::to_string(limits.smPercent));
  }
  if (limits.idleTimeoutS != 0) {
    args.push_back("--idle-timeout-s");
    args.push_back(std::to_string(limits.idleTimeoutS));
  }
  if (limits.mps) args.push_back("--mps");
  return args;
}

// The node's environment, with the variables that select the GPU and configure MPS replaced by
// what the limits ask for. Built before fork: the child only passes it to execve.
std::vector<std::string> workerEnvironment(const SessionLimits& limits) {
  std::vector<std::string> set;
  if (!limits.gpuUuid.empty()) set.push_back("CUDA_VISIBLE_DEVICES=" + limits.gpuUuid);
  if (limits.mps && limits.sharesSms()) {
    set.push_back(fmt::format("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE={}", limits.smPercent));
  }
  if (limits.mps && limits.memoryBytes != 0) {
    // Device 0 of the visible devices: the worker sees exactly one GPU when gpuUuid is set.
    set.push_back(fmt::format("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0={}M", mpsPinnedMemoryMiB(limits.memoryBytes)));
  }
  auto replaced = [&](std::string_view entry) {
    return std::any_of(set.begin(), set.end(), [&](const std::string& mine) {
      const auto name = std::string_view(mine).substr(0, mine.find('=') + 1);
      return entry.starts_with(name);
    });
  };
  std::vector<std::string> env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    if (!replaced(*entry)) env.emplace_back(*entry);
  }
  env.insert(env.end(), set.begin(), set.end());
  return env;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& text : strings) out.push_back(text.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

SpawnedWorker::~SpawnedWorker() {
  if (m_readFd >= 0) ::close(m_readFd);
  if (m_controlFd >= 0) ::close(m_controlFd);
}

SpawnedWorker::SpawnedWorker(SpawnedWorker&& other) noexcept
    : m_pid(other.m_pid), m_readFd(std::exchange(other.m_readFd, -1)),
      m_controlFd(std::exchange(other.m_controlFd, -1)) {}

transport::Result<std::string> SpawnedWorker::awaitReady(std::chrono::milliseconds timeout) {
  std::string line;
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      return fail(Errc::kTimeout, fmt::format("worker pid {} did not report ready within {} ms",
                                              m_pid, timeout.count()));
    }
    pollfd pfd{m_readFd, POLLIN, 0};
    auto polled = transport::sys("poll", [&] { return ::poll(&pfd, 1, int(left.count())); });
    if (!polled) return std::unexpected(polled.error());
    if (*polled == 0) continue;
    char buffer[128];
    auto got = transport::sys("read", [&] { return ::read(m_readFd, buffer, sizeof buffer); });
    if (!got) return std::unexpected(got.error());
    if (*got == 0) {
      return fail(Errc::kUnavailable,
                  fmt::format("worker pid {} exited before it listened (see its log above)", m_pid));
    }
    line.append(buffer, std::size_t(*got));
    if (auto end = line.find('\n'); end != std::string::npos) return line.substr(0, end);
    if (line.size() > kMaxReadyLine) {
      return fail(Errc::kMalformed, fmt::format("worker pid {} wrote an overlong ready line", m_pid));
    }
  }
}

transport::Result<SpawnedWorker> spawnWorker(const WorkerLaunch& launch) {
  auto args = workerArguments(launch);
  auto env = workerEnvironment(launch.limits);
  auto argv = pointers(args);
  auto envp = pointers(env);

  int ready[2];
  if (auto piped = transport::sys("pipe2", [&] { return ::pipe2(ready, O_CLOEXEC); }); !piped) {
    return std::unexpected(piped.error());
  }
  int control[2];
  if (auto piped = transport::sys("pipe2", [&] { return ::pipe2(control, O_CLOEXEC); }); !piped) {
    ::close(ready[0]);
    ::close(ready[1]);
    return std::unexpected(piped.error());
  }
  // The node must never block on a worker that does not read its control pipe.
  (void)::fcntl(control[1], F_SETFL, O_NONBLOCK);
  const pid_t pid = ::fork();
  if (pid == 0) execWorker(argv.data(), envp.data(), ready[1], control[0]);
  const int err = errno;
  ::close(ready[1]);
  ::close(control[0]);
  if (pid < 0) {
    ::close(ready[0]);
    ::close(control[1]);
    return fail(Errc::kSystem, fmt::format("fork: {}", std::strerror(err)), err);
  }
  return SpawnedWorker(pid, ready[0], control[1]);
}

transport::Result<void> sendMemoryLimit(int controlFd, std::uint64_t bytes) {
  const std::string line = fmt::format("memory-limit {}\n", bytes);
  const ssize_t written = ::write(controlFd, line.data(), line.size());
  if (written == ssize_t(line.size())) return {};
  const int err = written < 0 ? errno : 0;
  if (err == EPIPE || err == EAGAIN || err == EBADF) {
    return fail(Errc::kUnavailable,
                fmt::format("the worker's control pipe takes no more ({})", std::strerror(err)), err);
  }
  // A line is shorter than PIPE_BUF: it is written whole or not at all.
  return fail(Errc::kSystem, fmt::format("writing to the worker's control pipe: {}", std::strerror(err)), err);
}

std::string describeWaitStatus(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status), ::strsignal(WTERMSIG(status)));
  }
  return fmt::format("changed state (wait status {:#x})", status);
}

}  // namespace flyt::backend
