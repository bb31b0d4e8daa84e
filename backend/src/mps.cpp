#include "mps.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <thread>

namespace flyt::backend {
namespace {

using transport::Errc;
using transport::fail;
using Clock = std::chrono::steady_clock;

constexpr const char* kControlProgram = "nvidia-cuda-mps-control";
constexpr auto kPoll = std::chrono::milliseconds(20);

// The exit status of `pid` once it exits within `wait`; nullopt (and SIGKILLed, reaped) otherwise.
std::optional<int> waitExit(pid_t pid, std::chrono::milliseconds wait) {
  const auto deadline = Clock::now() + wait;
  for (;;) {
    int status = 0;
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) return status;
    if (done < 0 && errno != EINTR) return std::nullopt;
    if (Clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return std::nullopt;
    }
    std::this_thread::sleep_for(kPoll);
  }
}

// Spawns kControlProgram with `argument` (or none), its stdin `stdinFd` when >= 0.
transport::Result<pid_t> spawnControl(const char* argument, int stdinFd) {
  posix_spawn_file_actions_t actions;
  ::posix_spawn_file_actions_init(&actions);
  if (stdinFd >= 0) ::posix_spawn_file_actions_adddup2(&actions, stdinFd, STDIN_FILENO);
  char* argv[] = {const_cast<char*>(kControlProgram), const_cast<char*>(argument), nullptr};
  pid_t pid = -1;
  const int error = ::posix_spawnp(&pid, kControlProgram, &actions, nullptr, argv, environ);
  ::posix_spawn_file_actions_destroy(&actions);
  if (error != 0) {
    return fail(Errc::kUnavailable, fmt::format("cannot run {} (on PATH): {}", kControlProgram, std::strerror(error)),
                error);
  }
  return pid;
}

bool exitedCleanly(const std::optional<int>& status) {
  return status && WIFEXITED(*status) && WEXITSTATUS(*status) == 0;
}

}  // namespace

std::string mpsPipeDirectory() {
  const char* dir = std::getenv("CUDA_MPS_PIPE_DIRECTORY");
  return dir != nullptr && *dir != '\0' ? std::string(dir) : std::string("/tmp/nvidia-mps");
}

// A control FIFO/socket left by a daemon that died must not count: MPS would then not apply the
// active thread percentage and a session would get the whole GPU. So the daemon must answer: a
// socket accepts a connection, a FIFO has a reader (open for writing without blocking succeeds).
bool mpsControlRunning() {
  struct stat info {};
  const std::string control = mpsPipeDirectory() + "/control";
  if (::stat(control.c_str(), &info) != 0) return false;
  if (S_ISFIFO(info.st_mode)) {  // older drivers
    const int fd = ::open(control.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return false;  // ENXIO: nobody reads it
    ::close(fd);
    return true;
  }
  if (!S_ISSOCK(info.st_mode)) return false;  // the CUDA 13 driver's (seen on the H200 host)
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (control.size() >= sizeof address.sun_path) return false;
  std::memcpy(address.sun_path, control.c_str(), control.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  // A bound socket of another type (the daemon's is not SOCK_STREAM) answers EPROTOTYPE; a stale
  // one, whatever its type, ECONNREFUSED.
  const bool answered = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 || errno == EPROTOTYPE;
  ::close(fd);
  return answered;
}

transport::Result<void> startMpsDaemon(std::chrono::milliseconds wait) {
  const auto deadline = Clock::now() + wait;
  auto pid = spawnControl("-d", -1);
  if (!pid) return std::unexpected(pid.error());
  // With -d the program starts the daemon in the background and returns.
  const auto status = waitExit(*pid, wait);
  if (!exitedCleanly(status)) {
    return fail(Errc::kUnavailable, fmt::format("{} -d failed ({})", kControlProgram,
                                                status ? fmt::format("wait status {:#x}", *status) : "timed out"));
  }
  while (!mpsControlRunning()) {
    if (Clock::now() >= deadline) {
      return fail(Errc::kUnavailable, fmt::format("{} -d ran, but {}/control did not appear within {} ms",
                                                  kControlProgram, mpsPipeDirectory(), wait.count()));
    }
    std::this_thread::sleep_for(kPoll);
  }
  return {};
}

transport::Result<void> stopMpsDaemon(std::chrono::milliseconds wait) {
  int pipeFds[2];
  if (::pipe2(pipeFds, O_CLOEXEC) != 0) {
    return fail(Errc::kSystem, fmt::format("pipe2: {}", std::strerror(errno)), errno);
  }
  auto pid = spawnControl(nullptr, pipeFds[0]);
  ::close(pipeFds[0]);
  if (!pid) {
    ::close(pipeFds[1]);
    return std::unexpected(pid.error());
  }
  constexpr char kQuit[] = "quit\n";
  const bool written = ::write(pipeFds[1], kQuit, sizeof kQuit - 1) == ssize_t(sizeof kQuit - 1);
  ::close(pipeFds[1]);
  const auto status = waitExit(*pid, wait);
  if (!written || !exitedCleanly(status)) {
    return fail(Errc::kUnavailable, fmt::format("'quit' to {} failed ({})", kControlProgram,
                                                !written ? std::string("write")
                                                : status ? fmt::format("wait status {:#x}", *status)
                                                         : std::string("timed out")));
  }
  return {};
}

}  // namespace flyt::backend
