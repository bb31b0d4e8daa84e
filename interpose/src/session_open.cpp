// Opening a session as an interposed library does: the configuration (FLYT_CONFIG's client.toml,
// the FLYT_* variables), then the orchestrator's placement and grant, or FLYT_SERVER.
#include "session_open.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <utility>

#include <unistd.h>

#include "flyt/transport/log.hpp"
#include "flyt/transport/orchestrator_client.hpp"

namespace flyt::interpose {
namespace {

spdlog::logger& log() { return flyt::logger("interpose"); }

// FLYT_CONFIG names a client.toml ([transport], [cluster]); the FLYT_* variables override it.
transport::Result<std::pair<transport::TransportConfig, transport::ClusterClientConfig>> loadConfig() {
  const char* path = std::getenv("FLYT_CONFIG");
  std::optional<toml::table> file;
  transport::TransportConfig config;
  if (path != nullptr && *path != '\0') {
    auto table = transport::loadTomlFile(path);
    if (!table) return std::unexpected(table.error());
    auto fromFile = transport::transportConfigFromToml(*table, path);
    if (!fromFile) return std::unexpected(fromFile.error());
    config = *fromFile;
    file = std::move(*table);
  }
  auto withEnv = transport::applyTransportEnv(config);
  if (!withEnv) return std::unexpected(withEnv.error());
  auto cluster = transport::clusterClientConfig(file ? &*file : nullptr, path != nullptr ? path : "");
  if (!cluster) return std::unexpected(cluster.error());
  return std::pair{*withEnv, *cluster};
}

// Cluster mode: the orchestrator places the session and signs a grant, which the node checks;
// the endpoints it names are tried in order (shared memory first on the node's own host).
transport::Result<transport::OpenedSession> openGrantedSession(const transport::TransportConfig& config,
                                                               const transport::ClusterClientConfig& cluster,
                                                               transport::SessionApi api) {
  const transport::SessionRequestInfo request{cluster.tenant, cluster.token, programName(),
                                              transport::hostIdentity(), static_cast<std::uint32_t>(::getpid())};
  auto placement = transport::requestPlacement(cluster.orchestrator, request, config.connectTimeout * 2);
  if (!placement) return std::unexpected(placement.error());
  log().info("orchestrator placed session {:016x} on node {} (GPU {}, {}% of its SMs, {} bytes)",
             placement->sessionId, placement->node, placement->gpuUuid, placement->smPercent,
             placement->memoryBytes);
  transport::Error last{transport::Errc::kUnavailable, "the orchestrator named no endpoint for the node"};
  for (const auto& endpoint : placement->endpoints) {
    auto session = transport::openSession(endpoint, config, programName(), placement->signedGrant,
                                          placement->sessionId, api);
    if (session) return session;
    last = session.error();
    last.message = fmt::format("node {} at {}: {}", placement->node, endpoint, last.message);
    log().info("{}", last.message);
  }
  return std::unexpected(last);
}

}  // namespace

std::string programName() {
  std::ifstream comm("/proc/self/comm");
  std::string name;
  std::getline(comm, name);
  return name.empty() ? "cuda-app" : name;
}

transport::Result<transport::OpenedSession> openConfiguredSession(transport::TransportConfig& config, transport::SessionApi api) {
  auto loaded = loadConfig();
  if (!loaded) {
    return transport::fail(loaded.error().code, fmt::format("bad configuration: {}", loaded.error().describe()));
  }
  config = loaded->first;
  if (loaded->second.enabled()) {
    auto session = openGrantedSession(config, loaded->second, api);
    if (!session) {
      return transport::fail(session.error().code,
                             fmt::format("no Flyt session from the orchestrator: {}", session.error().describe()));
    }
    return session;
  }
  const char* server = std::getenv("FLYT_SERVER");
  if (server == nullptr || *server == '\0') {
    return transport::fail(transport::Errc::kInvalidArgument,
                           "FLYT_SERVER is not set: start CUDA programs with `flyt run -- PROGRAM` (or set "
                           "FLYT_ORCHESTRATOR and FLYT_TENANT in a cluster)");
  }
  auto session = transport::openSession(server, config, programName(), {}, 0, api);
  if (!session) {
    return transport::fail(session.error().code,
                           fmt::format("cannot reach the Flyt server {}: {}", server, session.error().describe()));
  }
  return session;
}


}  // namespace flyt::interpose
