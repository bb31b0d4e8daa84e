// Talking to flyt-orchestrator (schema/cluster.capnp) from processes that have no event loop of
// their own: the interposed library asks it for a session's placement, and flyt-node keeps a
// long-lived connection (backend's cluster agent).
//
// Cap'n Proto RPC needs a KJ event loop, and KJ allows one per thread. requestPlacement therefore
// runs its call on a thread of its own, so that it never meets an event loop the application (or
// another library in it) may run on the calling thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <toml++/toml.h>

#include "flyt/transport/error.hpp"

namespace flyt::transport {

struct SessionRequestInfo {
  std::string tenant;
  std::string token;
  std::string clientName;
  std::string hostId;  // hostIdentity() of the application's host
  std::uint32_t pid = 0;
};

struct PlacementInfo {
  std::vector<std::byte> signedGrant;  // send as Hello.token
  std::uint64_t sessionId = 0;
  std::string node;
  std::vector<std::string> endpoints;  // best first
  std::string gpuUuid;
  std::uint32_t smPercent = 0;
  std::uint64_t memoryBytes = 0;
};

// Asks the orchestrator at `address` for a session. Bounded by `timeout` (connecting included).
// While the orchestrator answers "not now" (no room, the tenant's sessions all in use), asks again
// every 100 ms until the timeout: a session that just ended is released by its node's next
// heartbeat. kUnavailable when the orchestrator cannot be reached, kInvalidArgument when it
// refuses (unknown tenant, wrong token, still no room at the deadline), with its reason.
[[nodiscard]] Result<PlacementInfo> requestPlacement(std::string_view address, const SessionRequestInfo& request,
                                                     std::chrono::milliseconds timeout);

// "host:port" (for OrchestratorConnection) from "tcp://host:port" or "host:port"; a missing port is 7000.
[[nodiscard]] Result<std::string> orchestratorAddress(std::string_view text);

// The application's cluster settings: the `[cluster]` table of client.toml (keys orchestrator,
// tenant, token), overridden by FLYT_ORCHESTRATOR, FLYT_TENANT and FLYT_TOKEN. Without an
// orchestrator the application connects to FLYT_SERVER (standalone mode).
struct ClusterClientConfig {
  std::string orchestrator;
  std::string tenant;
  std::string token;
  [[nodiscard]] bool enabled() const { return !orchestrator.empty(); }
};

// `file` may be null (no client.toml). Unknown keys and wrong types name `sourceName`, the line and
// the key; an orchestrator without a tenant is an error.
[[nodiscard]] Result<ClusterClientConfig> clusterClientConfig(const toml::table* file, std::string_view sourceName);

// Default orchestrator port.
inline constexpr std::uint16_t kOrchestratorPort = 7000;

// Identifies this host for "is the application on the node's host?" (shared memory is then
// possible): the kernel's boot id and the host name. Containers of one host share the boot id but
// usually not the host name, nor /dev/shm.
[[nodiscard]] std::string hostIdentity();

// The description of a KJ exception without the "remote exception: " prefixes capnp adds, for
// messages people read.
[[nodiscard]] std::string plainRpcMessage(std::string_view description);

}  // namespace flyt::transport
