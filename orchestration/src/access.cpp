#include "flyt/orchestration/access.hpp"

#include <capnp/schema.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "flyt/transport/log.hpp"

namespace flyt::orchestration {
namespace {

using transport::OrchestratorRole;

//                                  method          admin node   tenant what
constexpr std::array<MethodAccess, 11> kAccess = {{
    {"openSession", true, false, true, "opening a session"},
    {"registerNode", true, true, false, "registering a node"},
    {"heartbeat", true, true, false, "a node's heartbeat"},
    {"addTenant", true, false, false, "tenant administration"},
    {"listTenants", true, false, false, "tenant administration"},
    {"setTenant", true, false, false, "tenant administration"},
    {"removeTenant", true, false, false, "tenant administration"},
    {"listNodes", true, false, false, "listing nodes"},
    {"listSessions", true, false, false, "listing sessions"},
    {"killSession", true, false, false, "killing a session"},
    {"status", true, false, false, "the cluster's status"},
}};

const MethodAccess* rowOf(std::string_view method) {
  const auto* row = std::find_if(kAccess.begin(), kAccess.end(), [&](const auto& r) { return r.method == method; });
  return row == kAccess.end() ? nullptr : row;
}

bool allows(const MethodAccess& row, OrchestratorRole role) {
  switch (role) {
    case OrchestratorRole::kAdmin: return row.admin;
    case OrchestratorRole::kNode: return row.node;
    case OrchestratorRole::kTenant: break;
  }
  return row.tenant;
}

// Which secret would open `row`: the least privileged role that may call it.
std::string needs(const MethodAccess& row) {
  if (row.tenant) return fmt::format("{} is for applications (tenant connections)", row.what);
  if (row.node) {
    return fmt::format("{} needs the node token ([node] orchestrator_token_file or FLYT_NODE_TOKEN)", row.what);
  }
  return fmt::format("{} needs the admin token (flytctl --token-file or FLYT_ADMIN_TOKEN)", row.what);
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
// One connection's bootstrap capability: the service, narrowed to the connection's role. Calls go
// straight to the service's dispatch (same thread, no copy of the parameters).
class RoleGate final : public capnp::Capability::Server {
 public:
  RoleGate(OrchestratorService& service, OrchestratorRole role, std::string peer)
      : m_service(service), m_role(role), m_peer(std::move(peer)) {}

  DispatchCallResult dispatchCall(std::uint64_t interfaceId, std::uint16_t methodId,
                                  capnp::CallContext<capnp::AnyPointer, capnp::AnyPointer> context) override {
    if (interfaceId == capnp::typeId<wire::Orchestrator>()) {
      if (auto allowed = mayCall(m_role, methodId); !allowed) {
        flyt::logger("orchestrator").warn("refused {} to the {} connection from {}: {}", methodName(methodId),
                                          transport::roleName(m_role), m_peer, allowed.error().message);
        return {kj::Promise<void>(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                                                kj::heapString(allowed.error().message))),
                false};
      }
    }
    return m_service.dispatchCall(interfaceId, methodId, context);
  }

 private:
  OrchestratorService& m_service;
  OrchestratorRole m_role;
  std::string m_peer;
};
#pragma GCC diagnostic pop

}  // namespace

std::span<const MethodAccess> methodAccess() noexcept { return kAccess; }

std::string_view methodName(std::uint16_t methodId) {
  auto methods = capnp::Schema::from<wire::Orchestrator>().getMethods();
  if (methodId >= methods.size()) return {};
  auto name = methods[methodId].getProto().getName();
  return {name.begin(), name.size()};
}

transport::Result<void> mayCall(OrchestratorRole role, std::uint16_t methodId) {
  const std::string_view method = methodName(methodId);
  const MethodAccess* row = rowOf(method);
  if (row == nullptr) {
    if (role == OrchestratorRole::kAdmin) return {};  // unknown ids fail in the service's own dispatch
    return transport::fail(transport::Errc::kUnauthenticated,
                           fmt::format("permission denied: this connection is authenticated as {}; method {} needs "
                                       "the admin token (flytctl --token-file or FLYT_ADMIN_TOKEN)",
                                       transport::roleName(role), method.empty() ? "#" + std::to_string(methodId)
                                                                                 : std::string(method)));
  }
  if (allows(*row, role)) return {};
  return transport::fail(transport::Errc::kUnauthenticated,
                         fmt::format("permission denied: this connection is authenticated as {}; {}",
                                     transport::roleName(role), needs(*row)));
}

capnp::Capability::Client gatedOrchestrator(OrchestratorService& service, OrchestratorRole role, std::string peer) {
  return capnp::Capability::Client(kj::heap<RoleGate>(service, role, std::move(peer)));
}

}  // namespace flyt::orchestration
