// flyt-orchestrator: tenants, quotas, nodes, placement and grants for a Flyt cluster, over Cap'n
// Proto RPC (transport/schema/cluster.capnp), state in one SQLite file. Runs in the foreground until
// SIGINT or SIGTERM; the database is checkpointed and closed on the way out.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <kj/async-io.h>
#include <kj/async-unix.h>

#include <cstdlib>
#include <string>

#include "flyt/orchestration/config.hpp"
#include "flyt/orchestration/server.hpp"
#include "flyt/orchestration/service.hpp"
#include "flyt/orchestration/store.hpp"
#include "flyt/transport/config.hpp"
#include "flyt/transport/log.hpp"

namespace {

namespace fo = flyt::orchestration;

constexpr auto kSweepPeriod = 250 * kj::MILLISECONDS;

constexpr const char* kFooter = R"(Examples:
  flyt-orchestrator                                   listen on 127.0.0.1:7000, default database
  flyt-orchestrator --listen 0.0.0.0:7000             accept nodes and clients from other hosts
  flyt-orchestrator --config /etc/flyt/orchestrator.toml
  flyt-orchestrator --database /var/lib/flyt/orchestrator.db --log debug

The database defaults to $XDG_STATE_HOME/flyt/orchestrator.db, else ~/.local/state/flyt/orchestrator.db.
Administer it with flytctl (flytctl --help). Options override the file; FLYT_LOG sets the log level
when neither --log nor [log] level is given.

Who may connect: every connection proves a role before its calls run.
  admin   flytctl             every method         secret: admin_token (flytctl --token-file FILE)
  node    flyt-node           registerNode,        secret: node_token ([node] orchestrator_token_file)
                              heartbeat
  tenant  applications        openSession          no connection secret: the tenant's token per call
Set the secrets in [orchestrator] (admin_token_file, node_token_file: files of mode 0600, at least 16
bytes; or admin_token, node_token), or with FLYT_ADMIN_TOKEN_FILE, FLYT_ADMIN_TOKEN,
FLYT_NODE_TOKEN_FILE, FLYT_NODE_TOKEN, which override the file. A role without a secret is open to
anyone who reaches the port (a loud warning at start when --listen is not loopback).
  openssl rand -hex 32 > /etc/flyt/admin.token; chmod 600 /etc/flyt/admin.token
)";

struct CommandLine {
  std::string config;
  std::string listen;
  std::string database;
  std::string log;
  int readyFd = -1;
};

flyt::transport::Result<fo::OrchestratorConfig> resolveConfig(const CommandLine& cli) {
  fo::OrchestratorConfig config;
  if (const char* level = std::getenv("FLYT_LOG"); level != nullptr && *level != '\0') config.logLevel = level;
  if (!cli.config.empty()) {
    auto table = flyt::transport::loadTomlFile(cli.config);
    if (!table) return std::unexpected(table.error());
    auto parsed = fo::orchestratorConfigFromToml(*table, cli.config, config);
    if (!parsed) return parsed;
    config = *parsed;
  }
  auto withEnv = fo::applyOrchestratorEnv(config);
  if (!withEnv) return std::unexpected(withEnv.error());
  config = std::move(*withEnv);
  if (!cli.listen.empty()) config.listen = cli.listen;
  if (!cli.database.empty()) config.database = cli.database;
  if (!cli.log.empty()) config.logLevel = cli.log;
  if (config.listen.starts_with("tcp://")) config.listen.erase(0, 6);
  if (config.database.empty()) config.database = fo::defaultDatabasePath();
  if (auto ok = fo::checkConfig(config); !ok) return std::unexpected(ok.error());
  return config;
}

kj::Promise<void> sweepForever(kj::Timer& timer, fo::OrchestratorService& service) {
  return timer.afterDelay(kSweepPeriod).then([&timer, &service]() {
    service.sweep(flyt::transport::unixMillis());
    return sweepForever(timer, service);
  });
}

// "127.0.0.1:0" served on port 41234 -> "127.0.0.1:41234".
std::string servedAddress(const std::string& listen, unsigned port) {
  return fmt::format("{}:{}", listen.substr(0, listen.rfind(':')), port);
}

void reportReady(const std::string& address, int readyFd) {
  if (readyFd < 0) {
    fmt::print(stderr, "flyt-orchestrator: serving {}\n", address);
    std::fflush(stderr);
    return;
  }
  const std::string line = address + "\n";
  // Best effort: whoever asked for the report may have gone away.
  (void)!::write(readyFd, line.data(), line.size());
  ::close(readyFd);
}

int serve(const fo::OrchestratorConfig& config, int readyFd) {
  auto& log = flyt::logger("orchestrator");
  auto io = kj::setupAsyncIo();
  auto store = fo::Store::open(config.database);
  if (!store) {
    fmt::print(stderr, "flyt-orchestrator: {}\n", store.error().describe());
    return 1;
  }
  auto created = fo::OrchestratorService::create(config, std::move(*store));
  if (!created) {
    fmt::print(stderr, "flyt-orchestrator: {}\n", created.error().describe());
    return 1;
  }
  // The service outlives the server: each connection's capability refers to it.
  kj::Own<fo::OrchestratorService> service = kj::mv(*created);
  auto& timer = io.provider->getTimer();
  fo::OrchestratorServer server(*service, flyt::transport::RoleSecrets{config.adminToken, config.nodeToken}, timer);
  auto address = io.provider->getNetwork().parseAddress(config.listen).wait(io.waitScope);
  auto listener = address->listen();
  const std::string served = servedAddress(config.listen, listener->getPort());
  auto serving = server.listen(*listener).eagerlyEvaluate(
      [&log](kj::Exception&& e) { log.error("listener failed: {}", e.getDescription().cStr()); });
  auto sweeping = sweepForever(timer, *service).eagerlyEvaluate([&log](kj::Exception&& e) {
    log.error("the expiry sweep stopped: {}", e.getDescription().cStr());
  });
  log.info("serving {} (database {}, placement {}, heartbeat {} ms, node timeout {} ms, grants valid {} ms)", served,
           config.database, fo::placementName(config.placement), config.heartbeatMs, config.nodeTimeoutMs,
           config.grantTtlMs);
  fo::logAccess(config, served);
  reportReady(served, readyFd);

  auto stop = io.unixEventPort.onSignal(SIGINT).exclusiveJoin(io.unixEventPort.onSignal(SIGTERM));
  const siginfo_t signal = stop.wait(io.waitScope);
  log.info("{}: stopping", ::strsignal(signal.si_signo));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CommandLine cli;
  CLI::App app{"flyt-orchestrator: keeps a Flyt cluster's tenants (VMs) and their GPU quotas, the nodes and their "
               "GPUs, places sessions and signs their grants. State lives in one SQLite file.",
               "flyt-orchestrator"};
  app.footer(kFooter);
  app.add_option("--config", cli.config, "orchestrator.toml with [orchestrator] and [log] tables")
      ->check(CLI::ExistingFile);
  app.add_option("--listen", cli.listen, "address HOST:PORT to serve (default 127.0.0.1:7000; port 0 picks a free one)");
  app.add_option("--database", cli.database, "SQLite file (created 0600 with its directory if missing)");
  app.add_option("--log", cli.log, "log level: trace, debug, info, warn, error, off (default info)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  app.add_option("--ready-fd", cli.readyFd,
                 "when serving, write the address (HOST:PORT, the real port) and a newline to this descriptor and "
                 "close it, instead of the 'flyt-orchestrator: serving' line on stderr");
  CLI11_PARSE(app, argc, argv);

  auto config = resolveConfig(cli);
  if (!config) {
    fmt::print(stderr, "flyt-orchestrator: {}\n", config.error().describe());
    return 2;
  }
  // Before the first logger exists: flyt::logger reads FLYT_LOG once.
  ::setenv("FLYT_LOG", config->logLevel.c_str(), 1);
  ::signal(SIGPIPE, SIG_IGN);
  // Before any thread exists, so that every thread keeps them blocked and the event loop takes them.
  kj::UnixEventPort::captureSignal(SIGINT);
  kj::UnixEventPort::captureSignal(SIGTERM);
  try {
    return serve(*config, cli.readyFd);
  } catch (const kj::Exception& e) {
    fmt::print(stderr, "flyt-orchestrator: {}\n", e.getDescription().cStr());
    return 1;
  }
}
