// The flyt-node flytbench starts for one run: shm://flytbench-<pid> and a TCP listener on a free
// loopback port, in its own process group, stopped (SIGTERM, then SIGKILL) when the run ends or is
// interrupted, and sent SIGTERM by the kernel if flytbench dies (PR_SET_PDEATHSIG). Its output (and
// its workers') goes to an anonymous in-memory file instead of the terminal: iceoryx's start-up
// lines and the stand-in's warning per session would bury the progress lines. logTail() shows the
// end of it when something failed.
#pragma once

#include <expected>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "process.hpp"

namespace flyt::flytbench {

class PrivateNode {
 public:
  // Starts `nodePath` with `executor` (auto, cuda, standin) and waits for its endpoints.
  [[nodiscard]] static std::expected<PrivateNode, std::string> start(const std::filesystem::path& nodePath,
                                                                     const std::string& executor);

  PrivateNode(PrivateNode&& other) noexcept
      : m_child(std::exchange(other.m_child, std::nullopt)),
        m_log(std::exchange(other.m_log, -1)),
        m_endpoints(std::move(other.m_endpoints)) {}
  PrivateNode& operator=(PrivateNode&&) = delete;
  ~PrivateNode();

  // Every endpoint the node reported, shm first.
  [[nodiscard]] const std::vector<std::string>& endpoints() const { return m_endpoints; }
  // The endpoint with this scheme ("shm", "tcp"); empty when the node serves none.
  [[nodiscard]] std::string endpoint(std::string_view scheme) const;
  // Idempotent.
  void stop();
  // The last `lines` lines of the node's output, without iceoryx's start-up banner; empty if none.
  [[nodiscard]] std::string logTail(std::size_t lines) const;

 private:
  PrivateNode(Child child, int log) : m_child(std::move(child)), m_log(log) {}

  std::optional<Child> m_child;
  int m_log = -1;  // memfd, owned
  std::vector<std::string> m_endpoints;
};

}  // namespace flyt::flytbench
