#include "private_node.hpp"

#include <poll.h>
#include <sys/mman.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <cstdlib>
#include <sstream>

namespace flyt::flytbench {

namespace {

using namespace std::chrono_literals;
// A node with a GPU creates its RouDi and checks the device first: seconds, not minutes.
constexpr auto kStartTimeout = 30s;
constexpr auto kStopGrace = 5s;

// iceoryx's lines at every start and stop of a RouDi (its RouDi stops before the node's own
// runtime says goodbye): noise next to the node's log lines.
bool isBoilerplate(std::string_view line) {
  for (std::string_view noise : {"Log level set to", "Reserving", "unix_domain_socket.cpp",
                                 "Could not send request via RouDi", "TERMINATION to RouDi"}) {
    if (line.find(noise) != std::string_view::npos) return true;
  }
  return line.find_first_not_of(" \t\r") == std::string_view::npos;
}

// iceoryx colours its lines for a terminal; this text goes into reports.
std::string withoutColours(std::string_view line) {
  std::string out;
  for (std::size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '\033' && i + 1 < line.size() && line[i + 1] == '[') {
      while (i < line.size() && line[i] != 'm') ++i;
      continue;
    }
    out += line[i];
  }
  return out;
}

}  // namespace

std::expected<PrivateNode, std::string> PrivateNode::start(const std::filesystem::path& nodePath,
                                                           const std::string& executor) {
  std::vector<std::string> args = {nodePath.string(), "--shm",       fmt::format("flytbench-{}", ::getpid()),
                                   "--tcp",           "127.0.0.1:0", "--executor",
                                   executor,          "--ready-fd",  "3"};
  if (std::getenv("FLYT_LOG") == nullptr) args.insert(args.end(), {"--log", "warn"});
  const int log = ::memfd_create("flytbench-node-log", MFD_CLOEXEC);
  if (log < 0) return std::unexpected(fmt::format("memfd_create: {}", std::strerror(errno)));
  auto child = Child::spawn(args, environmentWith({}, {}), Child::Stdio::kReadyFd, log);
  if (!child) {
    ::close(log);
    return std::unexpected(fmt::format("cannot start {}: {}", nodePath.string(), child.error()));
  }
  PrivateNode node(std::move(*child), log);
  const auto failed = [&node](std::string what) {
    const std::string tail = node.logTail(15);
    return std::unexpected(tail.empty() ? what + " (its log is empty)"
                                        : fmt::format("{}; its log ended with:\n{}", what, tail));
  };

  // The ready line: "shm://NAME tcp://127.0.0.1:PORT\n", then the node closes the fd.
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  const int fd = node.m_child->ready();
  while (line.find('\n') == std::string::npos) {
    if (interrupted()) return std::unexpected("interrupted");
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left <= 0ms)
      return failed(fmt::format("flyt-node did not report ready within {} s", kStartTimeout.count()));
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, int(std::min(left, std::chrono::milliseconds(200)).count())) <= 0) continue;
    char buffer[512];
    const ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (got <= 0) {
      const auto status = node.m_child->reap(2s);
      return failed(fmt::format("flyt-node {} before it was ready",
                                status ? describeWaitStatus(*status) : "closed its ready fd"));
    }
    line.append(buffer, std::size_t(got));
  }
  node.m_child->closeReady();
  std::istringstream words(line.substr(0, line.find('\n')));
  for (std::string word; words >> word;) node.m_endpoints.push_back(word);
  if (node.m_endpoints.empty()) return std::unexpected("flyt-node reported no endpoint");
  return node;
}

std::string PrivateNode::endpoint(std::string_view scheme) const {
  const std::string prefix = std::string(scheme) + "://";
  for (const auto& endpoint : m_endpoints) {
    if (endpoint.starts_with(prefix)) return endpoint;
  }
  return {};
}

PrivateNode::~PrivateNode() {
  stop();
  if (m_log >= 0) ::close(m_log);
}

std::string PrivateNode::logTail(std::size_t lines) const {
  if (m_log < 0) return {};
  const off_t size = ::lseek(m_log, 0, SEEK_END);
  constexpr off_t kWindow = 64 * 1024;
  const off_t from = std::max<off_t>(0, size - kWindow);
  std::string text(std::size_t(size - from), '\0');
  const ssize_t got = ::pread(m_log, text.data(), text.size(), from);
  text.resize(got > 0 ? std::size_t(got) : 0);
  std::vector<std::string> kept;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);) {
    if (isBoilerplate(line)) continue;
    kept.push_back(withoutColours(line));
  }
  std::string out;
  for (std::size_t i = kept.size() > lines ? kept.size() - lines : 0; i < kept.size(); ++i)
    out += "    " + kept[i] + "\n";
  if (!out.empty()) out.pop_back();  // the last newline
  return out;
}

void PrivateNode::stop() {
  if (!m_child) return;
  const int status = m_child->stop(kStopGrace);
  if (!WIFEXITED(status) && !(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM)) {
    fmt::print(stderr, "flytbench: the private flyt-node {} while stopping\n", describeWaitStatus(status));
  }
  m_child.reset();
}

}  // namespace flyt::flytbench
