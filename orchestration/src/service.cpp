#include "flyt/orchestration/service.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "flyt/orchestration/placement.hpp"
#include "flyt/transport/log.hpp"
#include "service_util.hpp"

#ifndef FLYT_VERSION
#define FLYT_VERSION "unknown"
#endif

namespace flyt::orchestration {
namespace {

constexpr const char* kSigningKeyMeta = "signing_key";

spdlog::logger& log() { return flyt::logger("orchestrator"); }

}  // namespace

namespace detail {

bool isValidName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '-';
  });
}

}  // namespace detail

using detail::need;
using detail::refuse;

std::string sessionIdText(std::uint64_t id) { return fmt::format("{:016x}", id); }

transport::Result<kj::Own<OrchestratorService>> OrchestratorService::create(OrchestratorConfig config, Store store) {
  auto stored = store.meta(kSigningKeyMeta);
  if (!stored) return std::unexpected(stored.error());
  std::optional<transport::GrantSigner> signer;
  if (*stored) {
    auto raw = transport::fromHex(**stored);
    if (!raw) return std::unexpected(raw.error());
    auto loaded = transport::GrantSigner::fromPrivateKey(*raw);
    if (!loaded) return std::unexpected(loaded.error());
    signer.emplace(std::move(*loaded));
  } else {
    // First start: the key lives in the database so grants stay valid across restarts.
    auto generated = transport::GrantSigner::generate();
    if (!generated) return std::unexpected(generated.error());
    if (auto ok = store.setMeta(kSigningKeyMeta, transport::toHex(generated->privateKey())); !ok) {
      return std::unexpected(ok.error());
    }
    signer.emplace(std::move(*generated));
    log().info("generated the grant signing key (kept in {})", store.path());
  }
  return kj::heap<OrchestratorService>(std::move(config), std::move(store), std::move(*signer),
                                       transport::unixMillis());
}

OrchestratorService::OrchestratorService(OrchestratorConfig config, Store store, transport::GrantSigner signer,
                                         std::int64_t startedMs)
    : m_config(std::move(config)), m_store(std::move(store)), m_signer(std::move(signer)), m_startedMs(startedMs) {
  // Known nodes are down until they heartbeat; their sessions wait node_timeout_ms for it.
  if (auto nodes = m_store.nodes()) {
    for (const auto& node : *nodes) m_liveness[node.name] = Liveness{false, startedMs, false};
  }
}

void OrchestratorService::forgetSession(const SessionRecord& session) {
  if (auto it = m_pendingQuotas.find(session.node); it != m_pendingQuotas.end()) it->second.erase(session.id);
}

void OrchestratorService::killLater(const SessionRecord& session) {
  forgetSession(session);
  m_pendingKills[session.node].insert(session.id);
}

void OrchestratorService::sweep(std::int64_t nowMs) {
  try {
    releaseSilentNodes(nowMs);
    releaseExpiredGrants(nowMs);
  } catch (const kj::Exception& e) {
    // A database error must not stop the timer: the next sweep tries again.
    log().error("sweep: {}", e.getDescription().cStr());
  }
}

void OrchestratorService::releaseSilentNodes(std::int64_t nowMs) {
  for (auto& [name, liveness] : m_liveness) {
    if (nowMs - liveness.lastHeardMs <= std::int64_t(m_config.nodeTimeoutMs)) continue;
    if (liveness.up) {
      log().warn("node {} silent for {} ms: down", name, nowMs - liveness.lastHeardMs);
      liveness.up = false;
    }
    if (liveness.sessionsReleased) continue;
    for (const auto& session : need(m_store.removeSessionsOfNode(name))) {
      log().info("session {} of tenant {} released: node {} is down", sessionIdText(session.id), session.tenant, name);
      forgetSession(session);
    }
    m_pendingKills.erase(name);
    liveness.sessionsReleased = true;
  }
}

void OrchestratorService::releaseExpiredGrants(std::int64_t nowMs) {
  // The node checks a grant's expiry when the application says Hello and reports a new session at
  // once; two heartbeat periods leave room for that report to arrive.
  const std::int64_t grace = 2 * std::int64_t(m_config.heartbeatMs);
  for (const auto& session : need(m_store.sessions())) {
    if (session.state != SessionState::kGranted || nowMs <= session.grantExpiresMs + grace) continue;
    if (need(m_store.removeSession(session.id))) {
      log().info("session {} of tenant {} released: its grant expired unused", sessionIdText(session.id),
                 session.tenant);
      forgetSession(session);
    }
  }
}

std::uint32_t OrchestratorService::tenantSessions(const std::string& tenant) {
  auto sessions = need(m_store.sessions());
  return std::uint32_t(std::count_if(sessions.begin(), sessions.end(),
                                     [&](const SessionRecord& s) { return s.tenant == tenant; }));
}

kj::Promise<void> OrchestratorService::listNodes(ListNodesContext context) {
  const auto nodes = need(m_store.nodes());
  const auto usage = gpuUsage(need(m_store.gpus()), need(m_store.sessions()), m_config.sessionOverheadBytes());
  auto list = context.getResults().initNodes(unsigned(nodes.size()));
  for (unsigned i = 0; i < nodes.size(); ++i) {
    const auto& node = nodes[i];
    auto out = list[i];
    auto info = out.initInfo();
    info.setProtocolVersion(wire::CLUSTER_PROTOCOL_VERSION);
    info.setName(node.name);
    info.setHostId(node.hostId);
    info.setShmEndpoint(node.shmEndpoint);
    info.setTcpEndpoint(node.tcpEndpoint);
    info.setExecutor(node.executor);
    auto liveness = m_liveness.find(node.name);
    const bool up = liveness != m_liveness.end() && liveness->second.up;
    out.setUp(up);
    out.setLastSeenMs(up ? liveness->second.lastHeardMs : node.lastSeenMs);
    std::vector<const GpuUsage*> mine;
    for (const auto& gpu : usage) {
      if (gpu.gpu.node == node.name) mine.push_back(&gpu);
    }
    auto gpus = info.initGpus(unsigned(mine.size()));
    auto status = out.initGpus(unsigned(mine.size()));
    for (unsigned g = 0; g < mine.size(); ++g) {
      for (auto target : {gpus[g], status[g].initGpu()}) {
        target.setUuid(mine[g]->gpu.uuid);
        target.setName(mine[g]->gpu.name);
        target.setSmCount(mine[g]->gpu.smCount);
        target.setMemoryBytes(mine[g]->gpu.memoryBytes);
        target.setMps(mine[g]->gpu.mps);
      }
      status[g].setSmPercentUsed(mine[g]->smPercentUsed);
      status[g].setMemoryUsed(mine[g]->memoryUsed);
      status[g].setSessions(mine[g]->sessions);
    }
  }
  return kj::READY_NOW;
}

kj::Promise<void> OrchestratorService::listSessions(ListSessionsContext context) {
  const auto sessions = need(m_store.sessions());
  auto list = context.getResults().initSessions(unsigned(sessions.size()));
  for (unsigned i = 0; i < sessions.size(); ++i) {
    const auto& s = sessions[i];
    auto out = list[i];
    out.setSessionId(s.id);
    out.setTenant(s.tenant);
    out.setNode(s.node);
    out.setGpuUuid(s.gpuUuid);
    out.setSmPercent(s.smPercent);
    out.setMemoryBytes(s.memoryBytes);
    out.setState(std::string(sessionStateName(s.state)));
    out.setClientName(s.clientName);
    out.setPid(s.pid);
    out.setCreatedMs(s.createdMs);
  }
  return kj::READY_NOW;
}

kj::Promise<void> OrchestratorService::status(StatusContext context) {
  auto out = context.getResults().initStatus();
  out.setVersion(FLYT_VERSION);
  out.setStartedMs(m_startedMs);
  out.setDatabase(m_store.path());
  out.setPlacement(std::string(placementName(m_config.placement)));
  out.setTenants(unsigned(need(m_store.tenants()).size()));
  unsigned up = 0;
  for (const auto& [name, liveness] : m_liveness) up += liveness.up ? 1 : 0;
  out.setNodesUp(up);
  out.setNodesDown(unsigned(m_liveness.size()) - up);
  out.setGpus(unsigned(need(m_store.gpus()).size()));
  out.setSessions(unsigned(need(m_store.sessions()).size()));
  return kj::READY_NOW;
}

}  // namespace flyt::orchestration
