// Nodes: registerNode and heartbeat (session reconciliation and the orders a node carries out).
#include <fmt/format.h>

#include <set>

#include "flyt/orchestration/service.hpp"
#include "flyt/transport/units.hpp"
#include "flyt/transport/log.hpp"
#include "service_util.hpp"

namespace flyt::orchestration {

using transport::formatBytes;
namespace {

using detail::need;
using detail::refuse;

spdlog::logger& log() { return flyt::logger("orchestrator"); }

std::vector<GpuRecord> gpusOf(const std::string& node, capnp::List<wire::Gpu>::Reader gpus) {
  std::vector<GpuRecord> out;
  std::set<std::string> seen;
  for (auto gpu : gpus) {
    const std::string uuid = gpu.getUuid().cStr();
    if (uuid.empty() || !seen.insert(uuid).second) {
      refuse(fmt::format("node {} reports GPU uuid '{}' twice or empty: every GPU needs its own uuid", node, uuid));
    }
    out.push_back(GpuRecord{node, uuid, gpu.getName().cStr(), gpu.getSmCount(), gpu.getMemoryBytes(), gpu.getMps()});
  }
  return out;
}

}  // namespace

kj::Promise<void> OrchestratorService::registerNode(RegisterNodeContext context) {
  const auto info = context.getParams().getNode();
  if (info.getProtocolVersion() != wire::CLUSTER_PROTOCOL_VERSION) {
    refuse(fmt::format("node {} speaks cluster protocol version {}; this orchestrator speaks version {}: run the "
                       "same Flyt release on nodes and orchestrator",
                       info.getName().cStr(), info.getProtocolVersion(), wire::CLUSTER_PROTOCOL_VERSION));
  }
  const std::string name = info.getName().cStr();
  if (!detail::isValidName(name)) {
    refuse(fmt::format("node name '{}' is not 1-64 of [A-Za-z0-9_.-]", name));
  }
  const std::string hostId = info.getHostId().cStr();
  auto liveness = m_liveness.find(name);
  if (liveness != m_liveness.end() && liveness->second.up) {
    for (const auto& known : need(m_store.nodes())) {
      if (known.name == name && known.hostId != hostId) {
        refuse(fmt::format("node name '{}' is already taken by host '{}', which is up; give this node another name",
                           name, known.hostId));
      }
    }
  }
  const auto gpus = gpusOf(name, info.getGpus());
  const std::int64_t now = transport::unixMillis();
  const NodeRecord node{name, hostId, info.getShmEndpoint().cStr(), info.getTcpEndpoint().cStr(),
                        info.getExecutor().cStr(), now, now};
  need(m_store.putNode(node, gpus));
  m_liveness[name] = Liveness{true, now, false};

  std::string described;
  for (const auto& gpu : gpus) {
    described += fmt::format("{}{} {} ({} SMs, {}{})", described.empty() ? "" : ", ", gpu.uuid, gpu.name, gpu.smCount,
                             formatBytes(gpu.memoryBytes), gpu.mps ? ", MPS" : "");
  }
  log().info("node {} registered (host {}, {} executor, {} {}): {}", name, hostId, node.executor, node.shmEndpoint,
             node.tcpEndpoint.empty() ? "no tcp" : node.tcpEndpoint, described.empty() ? "no GPU" : described);
  const auto key = m_signer.publicKey();
  context.getResults().setPublicKey(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(key.data()), key.size()));
  context.getResults().setHeartbeatMs(m_config.heartbeatMs);
  return kj::READY_NOW;
}

kj::Promise<void> OrchestratorService::heartbeat(HeartbeatContext context) {
  const auto report = context.getParams().getReport();
  const std::string name = report.getName().cStr();
  auto orders = context.getResults().initOrders();
  auto liveness = m_liveness.find(name);
  if (liveness == m_liveness.end()) {
    log().info("heartbeat from unknown node '{}': asking it to register", name);
    orders.setReregister(true);
    return kj::READY_NOW;
  }
  const std::int64_t now = transport::unixMillis();
  if (!liveness->second.up) log().info("node {} is up", name);
  liveness->second = Liveness{true, now, false};

  std::set<std::uint64_t> live;
  for (auto id : report.getLive()) live.insert(id);
  auto txn = m_store.transaction();
  need(m_store.touchNode(name, now));
  for (auto end : report.getEnded()) {
    auto session = need(m_store.session(end.getSessionId()));
    m_pendingKills[name].erase(end.getSessionId());
    if (!session || session->node != name) continue;
    need(m_store.removeSession(session->id));
    forgetSession(*session);
    log().info("session {} of tenant {} ended on {}: {}", sessionIdText(session->id), session->tenant, name,
               end.getReason().cStr());
  }
  std::set<std::uint64_t> known;
  for (auto session : need(m_store.sessions())) {
    if (session.node != name) continue;
    known.insert(session.id);
    if (live.contains(session.id) && session.state == SessionState::kGranted) {
      session.state = SessionState::kActive;
      need(m_store.putSession(session));
      log().info("session {} of tenant {} is active on {}", sessionIdText(session.id), session.tenant, name);
    } else if (!live.contains(session.id) && session.state == SessionState::kActive) {
      need(m_store.removeSession(session.id));
      forgetSession(session);
      log().info("session {} of tenant {} released: node {} no longer serves it", sessionIdText(session.id),
                 session.tenant, name);
    }
  }
  need(txn.commit());

  auto& pendingKills = m_pendingKills[name];
  std::vector<std::uint64_t> kill;
  for (auto id : live) {
    if (known.contains(id)) continue;
    if (!pendingKills.contains(id)) {
      log().warn("node {} serves session {}, which the orchestrator does not know: ordering it killed", name,
                 sessionIdText(id));
    }
    kill.push_back(id);
  }
  // Kills are repeated until the node stops reporting the session.
  std::erase_if(pendingKills, [&](std::uint64_t id) { return !live.contains(id); });
  auto killList = orders.initKill(unsigned(kill.size()));
  for (unsigned i = 0; i < kill.size(); ++i) killList.set(i, kill[i]);

  auto& quotas = m_pendingQuotas[name];
  std::vector<std::pair<std::uint64_t, std::uint64_t>> deliver;
  for (auto it = quotas.begin(); it != quotas.end();) {
    if (live.contains(it->first) && known.contains(it->first)) {
      deliver.emplace_back(*it);
      it = quotas.erase(it);
    } else {
      ++it;
    }
  }
  auto quotaList = orders.initMemoryQuotas(unsigned(deliver.size()));
  for (unsigned i = 0; i < deliver.size(); ++i) {
    quotaList[i].setSessionId(deliver[i].first);
    quotaList[i].setMemoryBytes(deliver[i].second);
  }
  return kj::READY_NOW;
}

}  // namespace flyt::orchestration
