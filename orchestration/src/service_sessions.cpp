// Applications: openSession (token, placement, grant). Administration: killSession.
#include <fmt/format.h>

#include "flyt/orchestration/placement.hpp"
#include "flyt/orchestration/service.hpp"
#include "flyt/orchestration/token.hpp"
#include "flyt/transport/units.hpp"
#include "flyt/transport/log.hpp"
#include "service_util.hpp"

namespace flyt::orchestration {

using transport::formatBytes;
namespace {

using detail::need;
using detail::refuse;
using detail::refuseForNow;

spdlog::logger& log() { return flyt::logger("orchestrator"); }

bool sameHost(const NodeRecord& node, std::string_view clientHostId) {
  return !clientHostId.empty() && clientHostId == node.hostId && !node.shmEndpoint.empty();
}

}  // namespace

kj::Promise<void> OrchestratorService::openSession(OpenSessionContext context) {
  const auto request = context.getParams().getRequest();
  const std::string tenantName = request.getTenant().cStr();
  const std::string hostId = request.getHostId().cStr();
  auto tenant = need(m_store.tenant(tenantName));
  // Hash even for an unknown tenant, and say the same either way: a caller learns nothing about
  // which tenants exist.
  const std::string offered = hashToken(request.getToken().cStr());
  if (!tenant || !tokenHashesEqual(offered, tenant->tokenHash)) {
    log().warn("session refused: unknown tenant '{}' or wrong token (client {}, pid {})", tenantName,
               request.getClientName().cStr(), request.getPid());
    refuse(fmt::format("unknown tenant '{}' or wrong token", tenantName));
  }
  const std::uint32_t held = tenantSessions(tenant->name);
  if (held >= tenant->maxSessions) {
    refuseForNow(fmt::format("tenant '{}' already holds {} session{} (max_sessions {}): end one, or raise the limit "
                       "with flytctl tenant set {} --max-sessions N",
                       tenant->name, held, held == 1 ? "" : "s", tenant->maxSessions, tenant->name));
  }

  const auto nodes = need(m_store.nodes());
  UnavailableNodes unavailable;
  for (const auto& node : nodes) {
    auto it = m_liveness.find(node.name);
    if (it == m_liveness.end() || !it->second.up) {
      unavailable[node.name] = "is down";
    } else if (!sameHost(node, hostId) && node.tcpEndpoint.empty()) {
      unavailable[node.name] = "serves only shared memory and the client is on another host";
    }
  }
  const PlacementRequest wanted{tenant->smPercent, tenant->memoryBytes, m_config.sessionOverheadBytes()};
  auto chosen = place(gpuUsage(need(m_store.gpus()), need(m_store.sessions()), m_config.sessionOverheadBytes()),
                      nodes, unavailable, wanted, m_config.placement);
  if (!chosen) {
    log().warn("session of tenant {} refused: {}", tenant->name, chosen.error().message);
    refuseForNow(chosen.error().message);
  }

  std::uint64_t id = need(randomSessionId());
  while (need(m_store.session(id))) id = need(randomSessionId());
  const std::int64_t now = transport::unixMillis();
  SessionRecord session{id,
                        tenant->name,
                        chosen->gpu.node,
                        chosen->gpu.uuid,
                        tenant->smPercent,
                        tenant->memoryBytes,
                        SessionState::kGranted,
                        request.getClientName().cStr(),
                        request.getPid(),
                        now,
                        now + std::int64_t(m_config.grantTtlMs)};
  const transport::GrantInfo grant{id,         session.tenant,   session.node,           session.gpuUuid,
                                   session.smPercent, session.memoryBytes, now, session.grantExpiresMs,
                                   m_config.sessionIdleTimeoutS};
  const auto signedGrant = need(m_signer.sign(grant));
  need(m_store.putSession(session));

  const NodeRecord& node = *std::find_if(nodes.begin(), nodes.end(),
                                         [&](const NodeRecord& n) { return n.name == session.node; });
  std::vector<std::string> endpoints;
  if (sameHost(node, hostId)) endpoints.push_back(node.shmEndpoint);
  if (!node.tcpEndpoint.empty()) endpoints.push_back(node.tcpEndpoint);

  auto placement = context.getResults().initPlacement();
  placement.setSignedGrant(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(signedGrant.data()), signedGrant.size()));
  placement.setSessionId(id);
  placement.setNode(session.node);
  auto list = placement.initEndpoints(unsigned(endpoints.size()));
  for (unsigned i = 0; i < endpoints.size(); ++i) list.set(i, endpoints[i]);
  placement.setGpuUuid(session.gpuUuid);
  placement.setSmPercent(session.smPercent);
  placement.setMemoryBytes(session.memoryBytes);
  log().info("session {} of tenant {} granted on {} {}: {}% of SMs, {} (client {}, pid {})", sessionIdText(id),
             session.tenant, session.node, session.gpuUuid, session.smPercent, formatBytes(session.memoryBytes),
             session.clientName, session.pid);
  return kj::READY_NOW;
}

kj::Promise<void> OrchestratorService::killSession(KillSessionContext context) {
  const std::uint64_t id = context.getParams().getSessionId();
  auto session = need(m_store.session(id));
  if (!session) refuse(fmt::format("unknown session {}", sessionIdText(id)));
  need(m_store.removeSession(id));
  killLater(*session);
  log().info("session {} of tenant {} killed by an administrator: released; node {} is told to end it",
             sessionIdText(id), session->tenant, session->node);
  return kj::READY_NOW;
}

}  // namespace flyt::orchestration
