// Which role (transport/orchestrator_auth.hpp) may call which method of the orchestrator's RPC
// interface (transport/schema/cluster.capnp), and the capability that enforces it on a connection.
//
// The decision, per method (README.md "A cluster" lists the same table):
//
//   method                                   admin  node  tenant
//   openSession                              yes    no    yes     (and the tenant's token, per call)
//   registerNode, heartbeat                  yes    yes   no
//   addTenant, listTenants, setTenant,       yes    no    no
//   removeTenant, listNodes, listSessions,
//   killSession, status
//
// Admin is the operator and may call everything. A node may only describe itself and report its
// sessions: it learns nothing about tenants or other nodes. An application's connection needs no
// secret and may only ask for a placement, which its tenant's token authorises. A method missing
// from the table (a newer schema) is admin-only until someone decides otherwise.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <capnp/capability.h>

#include "flyt/orchestration/service.hpp"
#include "flyt/transport/error.hpp"
#include "flyt/transport/orchestrator_auth.hpp"

namespace flyt::orchestration {

struct MethodAccess {
  std::string_view method;  // as named in cluster.capnp
  bool admin = true;
  bool node = false;
  bool tenant = false;
  std::string_view what;    // what the call does, for the refusal ("tenant administration")
};

// The table above, one row per method of wire::Orchestrator.
[[nodiscard]] std::span<const MethodAccess> methodAccess() noexcept;

// The name of wire::Orchestrator's method `methodId` ("" for an id the schema does not have).
[[nodiscard]] std::string_view methodName(std::uint16_t methodId);

// Whether `role` may call `methodId`. The error (kUnauthenticated) is what the caller is told:
// "permission denied: this connection is authenticated as tenant; tenant administration needs the
// admin token (flytctl --token-file or FLYT_ADMIN_TOKEN)".
[[nodiscard]] transport::Result<void> mayCall(transport::OrchestratorRole role, std::uint16_t methodId);

// The bootstrap capability of one connection authenticated as `role`: forwards the calls `role` may
// make to `service`, fails the others with mayCall's message (a FAILED kj exception) and logs them
// with `peer`. `service` must outlive the capability (main() owns both; connections end first).
[[nodiscard]] capnp::Capability::Client gatedOrchestrator(OrchestratorService& service,
                                                          transport::OrchestratorRole role, std::string peer);

}  // namespace flyt::orchestration
