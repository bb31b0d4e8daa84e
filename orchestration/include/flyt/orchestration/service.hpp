// The orchestrator's RPC service (wire::Orchestrator, transport/schema/cluster.capnp): tenants,
// nodes, placement and grants over a Store.
//
// Semantics, as nodes and clients must expect them:
// - A tenant is a VM. Each of its sessions gets the tenant's SM share and memory quota on one GPU;
//   it may hold at most max_sessions sessions at once.
// - openSession checks the token, places the session (placement.hpp), records it as 'granted' and
//   answers a grant that expires after grant_ttl_ms.
// - A session becomes 'active' when its node's heartbeat lists it live. It is released (its
//   capacity freed) when the node reports it ended, when a node's heartbeat no longer lists an
//   active session, when its grant expired and no heartbeat listed it within two heartbeat periods
//   after, when flytctl kills it or removes its tenant, and when its node is down.
// - A node is up from its registration or any heartbeat until it is silent for node_timeout_ms;
//   then all its sessions are released. After a restart, known nodes are down until they heartbeat,
//   but their sessions are kept for node_timeout_ms, so that the first heartbeats reconcile them.
// - Heartbeat answers: reregister for an unknown node; kill for live sessions the orchestrator does
//   not know (killed, tenant removed, released, never granted); memoryQuotas for live sessions whose
//   tenant's memory quota changed, delivered once.
//
// Threading: everything runs on the event loop's thread; the RPC methods complete synchronously.
// Refusals are kj exceptions (FAILED) whose description is the reason a person reads.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include <kj/memory.h>

#include "flyt/orchestration/config.hpp"
#include "flyt/orchestration/store.hpp"
#include "flyt/transport/grant.hpp"
#include "flyt/wire/cluster.capnp.h"

namespace flyt::orchestration {

// Capability::Server's destructor is virtual; g++ still flags the generated intermediate class.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class OrchestratorService final : public wire::Orchestrator::Server {
 public:
  // Loads the signing key from the store, or generates and keeps one on first start. `config` has
  // its database path resolved.
  [[nodiscard]] static transport::Result<kj::Own<OrchestratorService>> create(OrchestratorConfig config, Store store);

  OrchestratorService(OrchestratorConfig config, Store store, transport::GrantSigner signer, std::int64_t startedMs);

  // Releases sessions of silent nodes and unused expired grants. Called by a timer (~250 ms).
  void sweep(std::int64_t nowMs);

 protected:
  kj::Promise<void> openSession(OpenSessionContext context) override;
  kj::Promise<void> registerNode(RegisterNodeContext context) override;
  kj::Promise<void> heartbeat(HeartbeatContext context) override;
  kj::Promise<void> addTenant(AddTenantContext context) override;
  kj::Promise<void> listTenants(ListTenantsContext context) override;
  kj::Promise<void> setTenant(SetTenantContext context) override;
  kj::Promise<void> removeTenant(RemoveTenantContext context) override;
  kj::Promise<void> listNodes(ListNodesContext context) override;
  kj::Promise<void> listSessions(ListSessionsContext context) override;
  kj::Promise<void> killSession(KillSessionContext context) override;
  kj::Promise<void> status(StatusContext context) override;

 private:
  struct Liveness {
    bool up = false;
    std::int64_t lastHeardMs = 0;  // the start time for nodes not heard since a restart
    bool sessionsReleased = false;  // since it went down
  };

  // Forgets pending orders of a session that is gone.
  void forgetSession(const SessionRecord& session);
  // Releases `session` and has its node told to kill it while it still reports it.
  void killLater(const SessionRecord& session);
  void releaseSilentNodes(std::int64_t nowMs);
  void releaseExpiredGrants(std::int64_t nowMs);
  [[nodiscard]] std::uint32_t tenantSessions(const std::string& tenant);

  OrchestratorConfig m_config;
  Store m_store;
  transport::GrantSigner m_signer;
  std::int64_t m_startedMs;
  std::map<std::string, Liveness> m_liveness;
  std::map<std::string, std::set<std::uint64_t>> m_pendingKills;  // per node
  std::map<std::string, std::map<std::uint64_t, std::uint64_t>> m_pendingQuotas;  // per node: id -> bytes
};
#pragma GCC diagnostic pop

// "0123456789abcdef": how session ids are shown and accepted (flytctl, logs).
[[nodiscard]] std::string sessionIdText(std::uint64_t id);

}  // namespace flyt::orchestration
