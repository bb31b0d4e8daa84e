#include "flyt/orchestration/server.hpp"

#include <arpa/inet.h>
#include <capnp/rpc-twoparty.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "flyt/orchestration/access.hpp"
#include "flyt/transport/endpoint.hpp"
#include "flyt/transport/log.hpp"

namespace flyt::orchestration {
namespace {

using transport::OrchestratorRole;

spdlog::logger& log() { return flyt::logger("orchestrator"); }

// "10.0.0.5:41234", "[::1]:41234", or "an unknown peer".
std::string peerOf(kj::AsyncIoStream& stream) {
  sockaddr_storage address{};
  kj::uint length = sizeof address;
  kj::Maybe<kj::Exception> failed =
      kj::runCatchingExceptions([&] { stream.getpeername(reinterpret_cast<sockaddr*>(&address), &length); });
  if (failed != nullptr) return "an unknown peer";
  char text[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(address);
    ::inet_ntop(AF_INET, &v4.sin_addr, text, sizeof text);
    return fmt::format("{}:{}", text, ntohs(v4.sin_port));
  }
  if (address.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(address);
    ::inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof text);
    return fmt::format("[{}]:{}", text, ntohs(v6.sin6_port));
  }
  return "a local peer";
}

// Largest message the orchestrator reads from a peer, in 8-byte words: requests are small (the
// largest, a heartbeat, lists a node's sessions), and a tenant connection needs no secret, so it
// must not make the orchestrator take capnp's default 64 MiB per message.
constexpr std::uint64_t kMaxRequestWords = 1 << 20;  // 8 MiB

capnp::ReaderOptions requestLimits() {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = kMaxRequestWords;
  return options;
}

// One authenticated connection: its stream and the RPC system on it (what capnp's TwoPartyServer
// keeps per connection, with a bootstrap of the connection's own).
struct RpcConnection {
  kj::Own<kj::AsyncIoStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;

  RpcConnection(kj::Own<kj::AsyncIoStream> s, capnp::Capability::Client bootstrap)
      : stream(kj::mv(s)),
        network(*stream, capnp::rpc::twoparty::Side::SERVER, requestLimits()),
        rpc(capnp::makeRpcServer(network, kj::mv(bootstrap))) {}
};

std::string hostOf(const std::string& listen) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.starts_with('[') && host.ends_with(']')) host = host.substr(1, host.size() - 2);
  return host;
}

}  // namespace

OrchestratorServer::OrchestratorServer(OrchestratorService& service, transport::RoleSecrets secrets,
                                       kj::Timer& timer, std::chrono::milliseconds preambleBound)
    : m_service(service),
      m_secrets(std::move(secrets)),
      m_timer(timer),
      m_preambleBound(preambleBound),
      m_tasks(*this) {}

kj::Promise<void> OrchestratorServer::listen(kj::ConnectionReceiver& listener) {
  return listener.accept().then([this, &listener](kj::Own<kj::AsyncIoStream> stream) {
    m_tasks.add(admit(kj::mv(stream)));
    return listen(listener);
  });
}

kj::Promise<void> OrchestratorServer::admit(kj::Own<kj::AsyncIoStream> stream) {
  std::string peer = peerOf(*stream);
  auto& raw = *stream;
  return transport::acceptPreamble(raw, m_timer, m_secrets, m_preambleBound)
      .then([this, stream = kj::mv(stream), peer = std::move(peer)](
                std::expected<OrchestratorRole, transport::PreambleRefusal> verdict) mutable -> kj::Promise<void> {
        if (!verdict) {
          const auto& refusal = verdict.error();
          if (refusal.role) {
            log().warn("refused {} connection from {}: {}", transport::roleName(*refusal.role), peer, refusal.reason);
          } else {
            log().warn("refused connection from {}: {}", peer, refusal.reason);
          }
          return kj::READY_NOW;  // dropping the stream closes it
        }
        const auto role = *verdict;
        log().debug("{} connection from {}", transport::roleName(role), peer);
        auto connection = kj::heap<RpcConnection>(kj::mv(stream), gatedOrchestrator(m_service, role, peer));
        auto ended = connection->network.onDisconnect().then([role, peer] {
          log().debug("{} connection from {} ended", transport::roleName(role), peer);
        });
        return ended.attach(kj::mv(connection));
      });
}

void OrchestratorServer::taskFailed(kj::Exception&& exception) {
  log().debug("a connection ended: {}", exception.getDescription().cStr());
}

void logAccess(const OrchestratorConfig& config, const std::string& served) {
  const bool open = !transport::isLoopbackHost(hostOf(served));
  struct Role {
    std::string_view name;
    const std::string& secret;
    std::string_view key;
    std::string_view exposure;
  };
  const Role roles[] = {
      {"admin", config.adminToken, "admin_token_file (or FLYT_ADMIN_TOKEN_FILE)",
       "administer this cluster (add tenants, change quotas, kill sessions, list everything)"},
      {"node", config.nodeToken, "node_token_file (or FLYT_NODE_TOKEN_FILE)",
       "register a fake node (and be sent sessions) or send heartbeats that end real nodes' sessions"},
  };
  for (const auto& role : roles) {
    if (!role.secret.empty()) {
      log().info("{} connections must prove they hold the {} token", role.name, role.name);
    } else if (open) {
      log().warn("!!! {} is reachable from other hosts and no {} token is set: ANYONE who can reach it can {}. "
                 "Set [orchestrator] {} !!!",
                 served, role.name, role.exposure, role.key);
    } else {
      log().info("{} connections need no token (none set; {} is loopback only)", role.name, served);
    }
  }
  if (!config.adminToken.empty() && config.adminToken == config.nodeToken) {
    log().warn("admin_token and node_token are the same secret: every node's host can administer this cluster; "
               "give them different tokens");
  }
}

}  // namespace flyt::orchestration
