// What the orchestrator keeps, as plain values: the rows of the Store's tables (store.hpp).
// Times are Unix milliseconds, sizes bytes, SM shares percentages of one GPU's SMs (1..100).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace flyt::orchestration {

// A tenant is a VM: each of its sessions gets smPercent of one GPU's SMs and memoryBytes of its
// memory; it may hold maxSessions sessions at once.
struct TenantRecord {
  std::string name;
  std::string tokenHash;  // hashToken(token); the token itself is never stored
  std::uint32_t smPercent = 0;
  std::uint64_t memoryBytes = 0;
  std::uint32_t maxSessions = 1;
  std::int64_t createdMs = 0;
};

struct NodeRecord {
  std::string name;
  std::string hostId;
  std::string shmEndpoint;
  std::string tcpEndpoint;  // empty: none
  std::string executor;     // "cuda" or "standin"
  std::int64_t lastSeenMs = 0;
  std::int64_t registeredMs = 0;
};

struct GpuRecord {
  std::string node;
  std::string uuid;
  std::string name;
  std::uint32_t smCount = 0;
  std::uint64_t memoryBytes = 0;
  bool mps = false;
};

enum class SessionState : std::uint8_t {
  kGranted,  // granted; the application has not reached the node yet (the node did not report it)
  kActive,   // the node reported it live
};

[[nodiscard]] inline std::string_view sessionStateName(SessionState state) noexcept {
  return state == SessionState::kActive ? "active" : "granted";
}

struct SessionRecord {
  std::uint64_t id = 0;
  std::string tenant;
  std::string node;
  std::string gpuUuid;
  std::uint32_t smPercent = 0;
  std::uint64_t memoryBytes = 0;  // the session's quota, without the per-session overhead
  SessionState state = SessionState::kGranted;
  std::string clientName;
  std::uint32_t pid = 0;
  std::int64_t createdMs = 0;
  std::int64_t grantExpiresMs = 0;
};

}  // namespace flyt::orchestration
