#include "process.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <utility>

extern char** environ;

namespace flyt::flytbench {

namespace {

volatile sig_atomic_t g_signal = 0;

void onSignal(int sig) { g_signal = sig; }

void closeFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// The child's side of fork; never returns. Only async-signal-safe calls until exec.
[[noreturn]] void execChild(const std::vector<char*>& argv, const std::vector<char*>& envp, pid_t parent,
                            bool dieWithParent, const int (&fds)[4]) {
  ::setpgid(0, 0);
  if (dieWithParent) {
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (::getppid() != parent) ::_exit(127);  // flytbench died before prctl took hold
  }
  // fds: the child's stdin, stdout, stderr and fd 3 (-1: keep / none).
  for (int target = 0; target < 4; ++target) {
    if (fds[target] >= 0) ::dup2(fds[target], target);  // dup2 clears close-on-exec on the copy
  }
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig : {SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGPIPE}) ::signal(sig, SIG_DFL);
  ::execve(argv[0], argv.data(), envp.data());
  const char* message = "flytbench: cannot execute ";
  (void)!::write(STDERR_FILENO, message, std::strlen(message));
  (void)!::write(STDERR_FILENO, argv[0], std::strlen(argv[0]));
  (void)!::write(STDERR_FILENO, "\n", 1);
  ::_exit(127);
}

}  // namespace

void installInterruptHandlers() {
  struct sigaction action {};
  action.sa_handler = onSignal;  // no SA_RESTART: poll and waitpid return EINTR
  sigemptyset(&action.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &action, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

bool interrupted() { return g_signal != 0; }

int interruptSignal() { return g_signal; }

std::vector<std::string> environmentWith(const std::vector<std::string>& unset,
                                         const std::vector<std::string>& set) {
  const auto nameOf = [](std::string_view entry) { return entry.substr(0, entry.find('=')); };
  std::vector<std::string> env;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view name = nameOf(*entry);
    bool drop = false;
    for (const auto& u : unset) drop = drop || name == u;
    for (const auto& s : set) drop = drop || name == nameOf(s);
    if (!drop) env.emplace_back(*entry);
  }
  env.insert(env.end(), set.begin(), set.end());
  return env;
}

std::filesystem::path selfDirectory() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path(".") : self.parent_path();
}

std::optional<std::filesystem::path> tryFindProgram(const std::string& program) {
  namespace fs = std::filesystem;
  const auto executable = [](const fs::path& file) {
    std::error_code ec;
    return fs::is_regular_file(file, ec) && ::access(file.c_str(), X_OK) == 0;
  };
  if (program.empty()) return std::nullopt;
  if (program.find('/') != std::string::npos) {
    std::error_code ec;
    const fs::path absolute = fs::absolute(program, ec);
    return !ec && executable(absolute) ? std::optional(absolute) : std::nullopt;
  }
  const char* path = std::getenv("PATH");
  const std::string_view dirs = path != nullptr ? path : "";
  for (std::size_t start = 0; start <= dirs.size();) {
    const std::size_t end = std::min(dirs.find(':', start), dirs.size());
    const fs::path dir(std::string(dirs.substr(start, end - start)));
    if (!dir.empty() && dir.is_absolute() && executable(dir / program)) return dir / program;
    start = end + 1;
  }
  return std::nullopt;
}

bool gpuPresent() {
  void* driver = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (driver == nullptr) return false;
  using InitFn = int (*)(unsigned);
  using CountFn = int (*)(int*);
  auto init = reinterpret_cast<InitFn>(::dlsym(driver, "cuInit"));
  auto count = reinterpret_cast<CountFn>(::dlsym(driver, "cuDeviceGetCount"));
  int devices = 0;
  const bool present =
      init != nullptr && count != nullptr && init(0) == 0 && count(&devices) == 0 && devices > 0;
  ::dlclose(driver);
  return present;
}

std::expected<Child, std::string> Child::spawn(const std::vector<std::string>& argv,
                                               const std::vector<std::string>& env, Stdio stdio, int logFd) {
  // pipes[i] = {read end, write end}; the parent keeps one end of each.
  int pipes[4][2] = {{-1, -1}, {-1, -1}, {-1, -1}, {-1, -1}};
  const auto closeAll = [&] {
    for (auto& p : pipes) {
      closeFd(p[0]);
      closeFd(p[1]);
    }
  };
  const std::vector<int> needed = stdio == Stdio::kPipes ? std::vector<int>{0, 1, 2} : std::vector<int>{3};
  for (int i : needed) {
    if (::pipe2(pipes[i], O_CLOEXEC) != 0) {
      const int err = errno;
      closeAll();
      return std::unexpected(fmt::format("pipe: {}", std::strerror(err)));
    }
  }
  int devNull = -1;
  int childFds[4] = {-1, -1, -1, -1};
  if (stdio == Stdio::kPipes) {
    childFds[0] = pipes[0][0];
    childFds[1] = pipes[1][1];
    childFds[2] = pipes[2][1];
  } else {
    devNull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    childFds[0] = devNull;
    childFds[1] = logFd >= 0 ? logFd : STDERR_FILENO;
    childFds[2] = logFd;
    childFds[3] = pipes[3][1];
  }
  std::vector<char*> cargv, cenv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  for (const auto& e : env) cenv.push_back(const_cast<char*>(e.c_str()));
  cenv.push_back(nullptr);

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) execChild(cargv, cenv, parent, stdio == Stdio::kReadyFd, childFds);
  const int forkErr = errno;
  closeFd(devNull);
  Child child;
  if (stdio == Stdio::kPipes) {
    child.m_in = std::exchange(pipes[0][1], -1);
    child.m_out = std::exchange(pipes[1][0], -1);
    child.m_err = std::exchange(pipes[2][0], -1);
  } else {
    child.m_ready = std::exchange(pipes[3][0], -1);
  }
  closeAll();
  if (pid < 0) return std::unexpected(fmt::format("fork: {}", std::strerror(forkErr)));
  ::setpgid(pid, pid);  // also here: no race with signalGroup() before the child ran
  child.m_pid = pid;
  for (int fd : {child.m_in, child.m_out, child.m_err, child.m_ready}) {
    if (fd >= 0) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  return child;
}

Child::Child(Child&& other) noexcept
    : m_pid(std::exchange(other.m_pid, -1)),
      m_in(std::exchange(other.m_in, -1)),
      m_out(std::exchange(other.m_out, -1)),
      m_err(std::exchange(other.m_err, -1)),
      m_ready(std::exchange(other.m_ready, -1)),
      m_status(other.m_status) {}

Child::~Child() {
  if (m_pid > 0 && !m_status) {
    signalGroup(SIGKILL);
    int status = 0;
    while (::waitpid(m_pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  for (int* fd : {&m_in, &m_out, &m_err, &m_ready}) closeFd(*fd);
}

void Child::closeInput() { closeFd(m_in); }
void Child::closeOutput() { closeFd(m_out); }
void Child::closeErrors() { closeFd(m_err); }
void Child::closeReady() { closeFd(m_ready); }

void Child::signalGroup(int sig) const {
  if (m_pid > 0 && !m_status) ::kill(-m_pid, sig);
}

std::optional<int> Child::reap(std::chrono::milliseconds timeout) {
  using namespace std::chrono_literals;
  if (m_status || m_pid <= 0) return m_status;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    if (::waitpid(m_pid, &status, WNOHANG) == m_pid) {
      m_status = status;
      return m_status;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(5ms);
  }
}

int Child::stop(std::chrono::milliseconds grace) {
  if (m_status || m_pid <= 0) return m_status.value_or(0);
  signalGroup(SIGTERM);
  if (auto status = reap(grace)) return *status;
  signalGroup(SIGKILL);
  int status = 0;
  while (::waitpid(m_pid, &status, 0) < 0 && errno == EINTR) {
  }
  m_status = status;
  return status;
}

std::string describeWaitStatus(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = ::sigabbrev_np(WTERMSIG(status));
    return name != nullptr ? fmt::format("was killed by SIG{}", name)
                           : fmt::format("was killed by signal {}", WTERMSIG(status));
  }
  return fmt::format("ended with wait status {}", status);
}

}  // namespace flyt::flytbench
