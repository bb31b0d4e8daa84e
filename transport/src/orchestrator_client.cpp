#include "flyt/transport/orchestrator_client.hpp"

#include <fmt/format.h>
#include <kj/async-io.h>
#include <kj/timer.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "flyt/transport/endpoint.hpp"
#include "flyt/transport/orchestrator_connection.hpp"
#include "flyt/wire/cluster.capnp.h"

namespace flyt::transport {
namespace {

// Exceptions that mean "nobody answered" rather than "the orchestrator said no".
bool isUnreachable(const kj::Exception& e) { return e.getType() == kj::Exception::Type::DISCONNECTED; }

// The orchestrator's "not now" (no room, the tenant's sessions all in use): worth asking again
// until the deadline, since a session that just ended is released within a heartbeat.
bool isForNow(const kj::Exception& e) { return e.getType() == kj::Exception::Type::OVERLOADED; }

constexpr auto kRetryForNow = std::chrono::milliseconds(100);

PlacementInfo placementOf(wire::Placement::Reader placement) {
  PlacementInfo info;
  auto grant = placement.getSignedGrant();
  info.signedGrant.assign(reinterpret_cast<const std::byte*>(grant.begin()), reinterpret_cast<const std::byte*>(grant.end()));
  info.sessionId = placement.getSessionId();
  info.node = placement.getNode().cStr();
  for (auto endpoint : placement.getEndpoints()) info.endpoints.emplace_back(endpoint.cStr());
  info.gpuUuid = placement.getGpuUuid().cStr();
  info.smPercent = placement.getSmPercent();
  info.memoryBytes = placement.getMemoryBytes();
  return info;
}

}  // namespace

Result<std::string> orchestratorAddress(std::string_view text) {
  std::string address(text);
  if (address.starts_with("tcp://")) address = address.substr(6);
  if (address.empty()) return fail(Errc::kInvalidArgument, "empty orchestrator address");
  if (address.find("://") != std::string::npos) {
    return fail(Errc::kInvalidArgument, fmt::format("orchestrator address '{}' is not tcp://HOST:PORT", text));
  }
  const bool bracketed = address.starts_with('[');
  const auto colon = address.rfind(':');
  const bool hasPort = colon != std::string::npos && (!bracketed || colon > address.find(']'));
  if (!hasPort) address += fmt::format(":{}", kOrchestratorPort);
  return address;
}

std::string plainRpcMessage(std::string_view description) {
  std::string text(description);
  constexpr std::string_view kRemote = "remote exception: ";
  while (text.starts_with(kRemote)) text.erase(0, kRemote.size());
  return text;
}

Result<PlacementInfo> requestPlacement(std::string_view where, const SessionRequestInfo& request,
                                       std::chrono::milliseconds timeout) {
  auto address = orchestratorAddress(where);
  if (!address) return std::unexpected(address.error());
  Result<PlacementInfo> result = fail(Errc::kUnavailable, "no answer");
  std::thread worker([&] {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    // The tenant role needs no connection secret: the tenant's token in each call is its proof.
    auto connection = OrchestratorConnection::open(*address, OrchestratorRole::kTenant, "", timeout);
    if (!connection) {
      result = std::unexpected(connection.error());
      if (result.error().code != Errc::kUnavailable) result.error().code = Errc::kInvalidArgument;
      return;
    }
    OrchestratorConnection& link = **connection;
    kj::Maybe<kj::Exception> thrown = kj::runCatchingExceptions([&] {
      for (;;) {
        auto call = link.orchestrator().openSessionRequest();
        auto req = call.initRequest();
        req.setTenant(request.tenant);
        req.setToken(request.token);
        req.setClientName(request.clientName);
        req.setHostId(request.hostId);
        req.setPid(request.pid);
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        kj::Maybe<kj::Exception> refused = kj::runCatchingExceptions([&] {
          auto response = link.wait(call.send(), std::max(left, std::chrono::milliseconds(1)));
          result = placementOf(response.getPlacement());
        });
        KJ_IF_MAYBE (e, refused) {
          if (isForNow(*e) && std::chrono::steady_clock::now() + kRetryForNow < deadline) {
            link.timer().afterDelay(kRetryForNow.count() * kj::MILLISECONDS).wait(link.waitScope());
            continue;
          }
          kj::throwFatalException(kj::mv(*e));
        }
        return;
      }
    });
    KJ_IF_MAYBE (e, thrown) {
      const std::string message = plainRpcMessage(e->getDescription().cStr());
      if (isUnreachable(*e)) {
        result = fail(Errc::kUnavailable,
                      fmt::format("cannot reach the orchestrator at tcp://{}: {}", *address, message));
      } else {
        result = fail(Errc::kInvalidArgument, fmt::format("the orchestrator refused the session: {}", message));
      }
    }
  });
  worker.join();
  return result;
}

Result<ClusterClientConfig> clusterClientConfig(const toml::table* file, std::string_view sourceName) {
  ClusterClientConfig config;
  struct Key {
    std::string_view name;
    const char* env;
    std::string ClusterClientConfig::*field;
  };
  static constexpr Key kKeys[] = {{"orchestrator", "FLYT_ORCHESTRATOR", &ClusterClientConfig::orchestrator},
                                  {"tenant", "FLYT_TENANT", &ClusterClientConfig::tenant},
                                  {"token", "FLYT_TOKEN", &ClusterClientConfig::token}};
  const toml::node* node = file != nullptr ? file->get("cluster") : nullptr;
  if (node != nullptr) {
    const toml::table* table = node->as_table();
    if (table == nullptr) {
      return fail(Errc::kInvalidArgument, fmt::format("{}:{}: 'cluster' must be a table", sourceName,
                                                      node->source().begin.line));
    }
    for (const auto& [name, value] : *table) {
      const auto* key = std::find_if(std::begin(kKeys), std::end(kKeys),
                                     [&](const Key& k) { return k.name == name.str(); });
      const auto line = value.source().begin.line;
      if (key == std::end(kKeys)) {
        return fail(Errc::kInvalidArgument,
                    fmt::format("{}:{}: unknown key 'cluster.{}' (known keys: orchestrator, tenant, token)",
                                sourceName, line, name.str()));
      }
      auto text = value.value<std::string>();
      if (!value.is_string() || !text) {
        return fail(Errc::kInvalidArgument, fmt::format("{}:{}: cluster.{} must be a string", sourceName, line,
                                                        name.str()));
      }
      config.*(key->field) = *text;
    }
  }
  for (const auto& key : kKeys) {
    if (const char* value = std::getenv(key.env); value != nullptr && *value != '\0') config.*(key.field) = value;
  }
  if (config.enabled()) {
    auto address = orchestratorAddress(config.orchestrator);
    if (!address) return std::unexpected(address.error());
    if (config.tenant.empty()) {
      return fail(Errc::kInvalidArgument,
                  "an orchestrator is configured but no tenant (cluster.tenant in client.toml, or FLYT_TENANT)");
    }
  }
  return config;
}

std::string hostIdentity() {
  std::string boot;
  std::ifstream("/proc/sys/kernel/random/boot_id") >> boot;
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) name[0] = '\0';
  return fmt::format("{}/{}", boot, name);
}

}  // namespace flyt::transport
