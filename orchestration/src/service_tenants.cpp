// Administration of tenants: addTenant, listTenants, setTenant, removeTenant.
#include <fmt/format.h>

#include <map>

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

constexpr std::uint32_t kMaxSessionsLimit = 65'536;
constexpr std::size_t kMinTokenLength = 8;
constexpr std::size_t kMaxTokenLength = 256;

spdlog::logger& log() { return flyt::logger("orchestrator"); }

void checkSmPercent(std::uint32_t smPercent) {
  if (smPercent < 1 || smPercent > 100) refuse(fmt::format("SM share {}% is outside 1..100", smPercent));
}

void checkMaxSessions(std::uint32_t maxSessions) {
  if (maxSessions < 1 || maxSessions > kMaxSessionsLimit) {
    refuse(fmt::format("max sessions {} is outside 1..{}", maxSessions, kMaxSessionsLimit));
  }
}

void checkToken(std::string_view token) {
  if (token.size() < kMinTokenLength || token.size() > kMaxTokenLength) {
    refuse(fmt::format("a token must have {} to {} characters (leave it out for a random one)", kMinTokenLength,
                       kMaxTokenLength));
  }
}

// A quota no GPU can hold would leave every session of the tenant refused. With no GPU known yet
// there is nothing to compare with, and the quota is accepted.
void checkMemory(std::uint64_t memoryBytes, std::uint64_t overheadBytes, const std::vector<GpuRecord>& gpus) {
  if (memoryBytes == 0) refuse("a memory quota must be larger than 0");
  const GpuRecord* largest = nullptr;
  for (const auto& gpu : gpus) {
    if (largest == nullptr || gpu.memoryBytes > largest->memoryBytes) largest = &gpu;
  }
  if (largest == nullptr || memoryBytes + overheadBytes <= largest->memoryBytes) return;
  const std::string biggest = fmt::format("largest: {}, {}", formatBytes(largest->memoryBytes), largest->node);
  if (memoryBytes > largest->memoryBytes) {
    refuse(fmt::format("memory quota {} is larger than any GPU ({})", formatBytes(memoryBytes), biggest));
  }
  refuse(fmt::format("memory quota {} plus the per-session overhead of {} is larger than any GPU ({})",
                     formatBytes(memoryBytes), formatBytes(overheadBytes), biggest));
}

void fillTenant(wire::Tenant::Builder out, const TenantRecord& tenant, std::uint32_t sessions) {
  out.setName(tenant.name);
  out.setSmPercent(tenant.smPercent);
  out.setMemoryBytes(tenant.memoryBytes);
  out.setMaxSessions(tenant.maxSessions);
  out.setSessions(sessions);
}

}  // namespace

kj::Promise<void> OrchestratorService::addTenant(AddTenantContext context) {
  const auto params = context.getParams();
  const auto wanted = params.getTenant();
  TenantRecord tenant;
  tenant.name = wanted.getName().cStr();
  if (!detail::isValidName(tenant.name)) {
    refuse(fmt::format("tenant name '{}' is not 1-64 of [A-Za-z0-9_.-]", tenant.name));
  }
  tenant.smPercent = wanted.getSmPercent();
  tenant.memoryBytes = wanted.getMemoryBytes();
  tenant.maxSessions = wanted.getMaxSessions() == 0 ? 1 : wanted.getMaxSessions();
  checkSmPercent(tenant.smPercent);
  checkMaxSessions(tenant.maxSessions);
  checkMemory(tenant.memoryBytes, m_config.sessionOverheadBytes(), need(m_store.gpus()));
  if (need(m_store.tenant(tenant.name))) {
    refuse(fmt::format("tenant '{}' already exists (flytctl tenant set changes it)", tenant.name));
  }
  std::string token = params.getToken().cStr();
  if (token.empty()) {
    token = need(randomToken());
  } else {
    checkToken(token);
  }
  tenant.tokenHash = hashToken(token);
  tenant.createdMs = transport::unixMillis();
  need(m_store.putTenant(tenant));
  log().info("tenant {} added: {}% of a GPU's SMs and {} per session, at most {} session{}", tenant.name,
             tenant.smPercent, formatBytes(tenant.memoryBytes), tenant.maxSessions, tenant.maxSessions == 1 ? "" : "s");
  fillTenant(context.getResults().initTenant(), tenant, 0);
  context.getResults().setToken(token);
  return kj::READY_NOW;
}

kj::Promise<void> OrchestratorService::listTenants(ListTenantsContext context) {
  const auto tenants = need(m_store.tenants());
  std::map<std::string, std::uint32_t> counts;
  for (const auto& session : need(m_store.sessions())) ++counts[session.tenant];
  auto list = context.getResults().initTenants(unsigned(tenants.size()));
  for (unsigned i = 0; i < tenants.size(); ++i) fillTenant(list[i], tenants[i], counts[tenants[i].name]);
  return kj::READY_NOW;
}

kj::Promise<void> OrchestratorService::setTenant(SetTenantContext context) {
  const auto change = context.getParams().getChange();
  const std::string name = change.getName().cStr();
  auto found = need(m_store.tenant(name));
  if (!found) refuse(fmt::format("unknown tenant '{}'", name));
  TenantRecord tenant = *found;
  if (change.getSmPercent() != 0) {
    checkSmPercent(change.getSmPercent());
    tenant.smPercent = change.getSmPercent();
  }
  if (change.getMaxSessions() != 0) {
    checkMaxSessions(change.getMaxSessions());
    tenant.maxSessions = change.getMaxSessions();
  }
  if (change.hasToken() && change.getToken().size() > 0) {
    checkToken(change.getToken().cStr());
    tenant.tokenHash = hashToken(change.getToken().cStr());
  }
  std::vector<SessionRecord> live;
  for (auto& session : need(m_store.sessions())) {
    if (session.tenant == name) live.push_back(std::move(session));
  }
  if (change.getMemoryBytes() != 0 && change.getMemoryBytes() != tenant.memoryBytes) {
    tenant.memoryBytes = change.getMemoryBytes();
    checkMemory(tenant.memoryBytes, m_config.sessionOverheadBytes(), need(m_store.gpus()));
    // Live sessions take the new quota too; a raise must fit the GPUs they run on.
    auto usage = gpuUsage(need(m_store.gpus()), need(m_store.sessions()), m_config.sessionOverheadBytes());
    for (auto& gpu : usage) {
      bool touched = false;
      for (const auto& session : live) {
        if (session.node != gpu.gpu.node || session.gpuUuid != gpu.gpu.uuid) continue;
        gpu.memoryUsed = gpu.memoryUsed - session.memoryBytes + tenant.memoryBytes;
        touched = true;
      }
      if (touched && gpu.memoryUsed > gpu.gpu.memoryBytes) {
        refuse(fmt::format("tenant '{}' has live sessions on {} {}, which cannot hold {} per session: {} would be "
                           "used of {}",
                           name, gpu.gpu.node, gpu.gpu.uuid, formatBytes(tenant.memoryBytes),
                           formatBytes(gpu.memoryUsed), formatBytes(gpu.gpu.memoryBytes)));
      }
    }
  }
  auto txn = m_store.transaction();
  need(m_store.putTenant(tenant));
  for (auto& session : live) {
    if (session.memoryBytes == tenant.memoryBytes) continue;
    session.memoryBytes = tenant.memoryBytes;
    need(m_store.putSession(session));
    m_pendingQuotas[session.node][session.id] = tenant.memoryBytes;
  }
  need(txn.commit());
  log().info("tenant {} set: {}% of SMs, {} per session, at most {} session{}", name, tenant.smPercent,
             formatBytes(tenant.memoryBytes), tenant.maxSessions, tenant.maxSessions == 1 ? "" : "s");
  if (!live.empty() && tenant.smPercent != found->smPercent) {
    log().info("tenant {}: its {} live session{} keep their SM share until they end", name, live.size(),
               live.size() == 1 ? "" : "s");
  }
  fillTenant(context.getResults().initTenant(), tenant, std::uint32_t(live.size()));
  return kj::READY_NOW;
}

kj::Promise<void> OrchestratorService::removeTenant(RemoveTenantContext context) {
  const std::string name = context.getParams().getName().cStr();
  if (!need(m_store.tenant(name))) refuse(fmt::format("unknown tenant '{}'", name));
  const auto ended = need(m_store.removeTenant(name));
  for (const auto& session : ended) killLater(session);
  log().info("tenant {} removed; {} session{} ended", name, ended.size(), ended.size() == 1 ? "" : "s");
  context.getResults().setEndedSessions(std::uint32_t(ended.size()));
  return kj::READY_NOW;
}

}  // namespace flyt::orchestration
