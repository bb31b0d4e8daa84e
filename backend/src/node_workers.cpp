#include "node_workers.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cstring>
#include <vector>

#include "flyt/transport/sys.hpp"
#include "node_config.hpp"

namespace flyt::backend {
namespace {

using transport::Errc;
using transport::fail;
using Clock = std::chrono::steady_clock;

constexpr int kReadyFdInChild = 3;
constexpr std::size_t kMaxReadyLine = 512;

// Runs in the forked child: async-signal-safe calls only, then exec; never returns.
[[noreturn]] void execWorker(char* const* argv, int readyFd) {
  ::setpgid(0, 0);
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD}) ::signal(sig, SIG_DFL);
  if (readyFd != kReadyFdInChild) {
    if (::dup2(readyFd, kReadyFdInChild) < 0) ::_exit(127);
  } else {
    ::fcntl(kReadyFdInChild, F_SETFD, 0);  // keep it across exec
  }
  ::close_range(kReadyFdInChild + 1, ~0U, 0);
  ::execv(argv[0], argv);
  ::_exit(127);
}

}  // namespace

SpawnedWorker::~SpawnedWorker() {
  if (m_readFd >= 0) ::close(m_readFd);
}

SpawnedWorker::SpawnedWorker(SpawnedWorker&& other) noexcept
    : m_pid(other.m_pid), m_readFd(std::exchange(other.m_readFd, -1)) {}

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
  std::vector<std::string> args = {launch.workerPath,
                                   "--listen", launch.listen,
                                   "--session", fmt::format("{:016x}", launch.sessionId),
                                   "--ready-fd", std::to_string(kReadyFdInChild),
                                   "--executor", std::string(executorName(launch.executor))};
  if (!launch.configPath.empty()) {
    args.push_back("--config");
    args.push_back(launch.configPath);
  }
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  int fds[2];
  if (auto piped = transport::sys("pipe2", [&] { return ::pipe2(fds, O_CLOEXEC); }); !piped) {
    return std::unexpected(piped.error());
  }
  const pid_t pid = ::fork();
  if (pid == 0) execWorker(argv.data(), fds[1]);
  const int err = errno;
  ::close(fds[1]);
  if (pid < 0) {
    ::close(fds[0]);
    return fail(Errc::kSystem, fmt::format("fork: {}", std::strerror(err)), err);
  }
  return SpawnedWorker(pid, fds[0]);
}

std::string describeWaitStatus(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status), ::strsignal(WTERMSIG(status)));
  }
  return fmt::format("changed state (wait status {:#x})", status);
}

}  // namespace flyt::backend
