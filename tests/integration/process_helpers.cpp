#include "process_helpers.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <regex>
#include <fstream>
#include <sstream>
#include <thread>

namespace flyt::test {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

Process::Process(std::vector<std::string> argv, std::vector<std::string> extraEnv) {
  static std::atomic<int> counter{0};
  m_stderrPath = ::testing::TempDir() + "/flyt-it-" + std::to_string(::getpid()) + "-" +
                 std::to_string(counter++) + ".stderr";
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2 failed";
    return;
  }
  std::vector<char*> args;
  for (auto& arg : argv) args.push_back(arg.data());
  args.push_back(nullptr);
  m_pid = ::fork();
  if (m_pid == 0) {
    const int err = ::open(m_stderrPath.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::dup2(err, 2);
    for (auto& assignment : extraEnv) ::putenv(assignment.data());
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  m_stdin = in[1];
  m_stdout = out[0];
}

Process::~Process() {
  if (m_pid > 0 && !m_reaped) {
    ::kill(m_pid, SIGKILL);
    ::waitpid(m_pid, nullptr, 0);
  }
  if (m_stdin >= 0) ::close(m_stdin);
  if (m_stdout >= 0) ::close(m_stdout);
  ::unlink(m_stderrPath.c_str());
}

std::optional<std::string> Process::readLine(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (auto end = m_buffered.find('\n'); end != std::string::npos) {
      std::string line = m_buffered.substr(0, end);
      m_buffered.erase(0, end + 1);
      return line;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd pfd{m_stdout, POLLIN, 0};
    if (::poll(&pfd, 1, int(left.count())) <= 0) continue;
    char buffer[4096];
    const ssize_t got = ::read(m_stdout, buffer, sizeof buffer);
    if (got <= 0) return std::nullopt;
    m_buffered.append(buffer, std::size_t(got));
  }
}

std::string Process::readAll(std::chrono::milliseconds timeout) {
  std::string all;
  while (auto line = readLine(timeout)) all += *line + "\n";
  return all + std::exchange(m_buffered, {});
}

std::string Process::stderrText() const {
  std::ifstream in(m_stderrPath);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool Process::writeLine(const std::string& line) {
  if (m_stdin < 0) return false;
  const std::string text = line + "\n";
  ::signal(SIGPIPE, SIG_IGN);
  return ::write(m_stdin, text.data(), text.size()) == static_cast<ssize_t>(text.size());
}

void Process::closeStdin() {
  if (m_stdin >= 0) ::close(std::exchange(m_stdin, -1));
}

void Process::signal(int sig) const {
  if (m_pid > 0 && !m_reaped) ::kill(m_pid, sig);
}

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    int status = 0;
    if (::waitpid(m_pid, &status, WNOHANG) == m_pid) {
      m_reaped = true;
      return status;
    }
    if (Clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  for (auto deadline = Clock::now() + timeout; Clock::now() < deadline;) {
    if (condition()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return condition();
}

bool processExists(pid_t pid) { return std::filesystem::exists("/proc/" + std::to_string(pid)); }

std::vector<pid_t> processesWithArgument(const std::string& needle) {
  std::vector<pid_t> found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = std::stoi(name);
    if (pid == ::getpid()) continue;
    std::ifstream in(entry.path() / "cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find(needle) != std::string::npos) found.push_back(pid);
  }
  return found;
}

std::vector<std::string> shmFiles(const std::string& prefix) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(prefix)) names.push_back(name);
  }
  return names;
}

StandinNode::StandinNode(const std::string& nodePath, const std::string& prefix, std::vector<std::string> env,
                         std::vector<std::string> options) {
  static std::atomic<int> counter{0};
  const std::string name = prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  std::vector<std::string> argv{nodePath, "--shm", name, "--tcp", "127.0.0.1:0", "--executor", "standin", "--log", "info"};
  argv.insert(argv.end(), options.begin(), options.end());
  process = std::make_unique<Process>(std::move(argv), std::move(env));
}

bool StandinNode::ready() {
  const std::regex line(R"(flyt-node: serving (shm://\S+) and (tcp://\S+))");
  std::smatch match;
  if (!eventually([&] { const std::string t = log(); return std::regex_search(t, match, line); }, 10s)) return false;
  shm = match[1];
  tcp = match[2];
  return true;
}

}  // namespace flyt::test
