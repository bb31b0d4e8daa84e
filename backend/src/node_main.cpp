// flyt-node: serves Flyt sessions on this GPU host, one flyt-worker process per session.
// Runs in the foreground until SIGINT or SIGTERM; see node.hpp for the process model.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

#include "flyt/transport/log.hpp"
#include "flyt/transport/orchestrator_client.hpp"
#include "flyt/transport/units.hpp"
#include "node.hpp"

namespace {

using flyt::backend::NodeOptions;

constexpr const char* kFooter = R"(Examples:
  flyt-node                                  shm://flyt and tcp://127.0.0.1:7070
  flyt-node --tcp 0.0.0.0:7070               accept TCP sessions from other hosts
  flyt-node --shm gpu0 --tcp none            shared memory only, under another name
  flyt-node --config /etc/flyt/node.toml     keys of [node] and [transport]; options override them
  flyt-node --orchestrator ctl1:7000 --tcp 0.0.0.0:7070
                                             cluster mode: register with flyt-orchestrator, admit
                                             only sessions it granted, enforce their quotas
  flyt-node --session-memory-limit 8GiB --session-sm-percent 50
                                             standalone mode limits: every session gets 8 GiB and
                                             half of the GPU's SMs

Cluster mode: when the orchestrator has a node_token, the node must prove it holds the same secret:
[node] orchestrator_token_file (mode 0600), else FLYT_NODE_TOKEN_FILE, else FLYT_NODE_TOKEN.

Environment: FLYT_LOG (log level, overridden by --log), FLYT_NODE_TOKEN_FILE, FLYT_NODE_TOKEN and
the FLYT_* transport keys:
)";

struct CommandLine {
  std::string shm;
  std::string tcp;
  std::string config;
  std::string worker;
  std::string executor;
  std::string log = "info";
  int readyFd = -1;
  std::string sessionMemoryLimit;
  std::optional<std::int64_t> sessionSmPercent;
  std::optional<std::uint32_t> sessionIdleTimeoutS;
  std::string orchestrator;
  std::string name;
  std::string advertise;
  std::string mps;
};

std::filesystem::path selfDirectory() {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path(".") : self.parent_path();
}

// File, then environment, then the command line.
flyt::transport::Result<NodeOptions> resolveOptions(const CommandLine& cli) {
  namespace fb = flyt::backend;
  namespace ft = flyt::transport;
  NodeOptions options;
  if (!cli.config.empty()) {
    auto table = ft::loadTomlFile(cli.config);
    if (!table) return std::unexpected(table.error());
    auto transport = ft::transportConfigFromToml(*table, cli.config);
    if (!transport) return std::unexpected(transport.error());
    options.transport = *transport;
    auto node = fb::nodeConfigFromToml(*table, cli.config);
    if (!node) return std::unexpected(node.error());
    options.node = *node;
    options.configPath = std::filesystem::absolute(cli.config).string();
  }
  auto node = fb::applyNodeEnv(options.node);
  if (!node) return std::unexpected(node.error());
  options.node = std::move(*node);
  auto transport = ft::applyTransportEnv(options.transport);
  if (!transport) return std::unexpected(transport.error());
  options.transport = *transport;
  if (!cli.shm.empty()) {
    if (auto ok = fb::checkNodeShmName(cli.shm); !ok) return std::unexpected(ok.error());
    options.node.shmName = cli.shm;
  }
  if (!cli.tcp.empty()) {
    auto tcp = fb::parseTcpOption(cli.tcp);
    if (!tcp) return std::unexpected(tcp.error());
    options.node.tcp = *tcp;
  }
  if (!cli.executor.empty()) {
    auto executor = fb::parseExecutor(cli.executor);
    if (!executor) return std::unexpected(executor.error());
    options.node.executor = *executor;
  }
  auto& limits = options.node.sessionLimits;
  if (!cli.sessionMemoryLimit.empty()) {
    auto bytes = ft::parseSize(cli.sessionMemoryLimit);
    if (!bytes) return std::unexpected(bytes.error());
    limits.memoryBytes = *bytes;
  }
  if (cli.sessionSmPercent) {
    auto percent = fb::checkSmPercent(*cli.sessionSmPercent);
    if (!percent) return std::unexpected(percent.error());
    limits.smPercent = *percent;
  }
  if (cli.sessionIdleTimeoutS) limits.idleTimeoutS = *cli.sessionIdleTimeoutS;
  if (!cli.orchestrator.empty()) options.node.orchestrator = cli.orchestrator == "none" ? "" : cli.orchestrator;
  if (!cli.advertise.empty()) options.node.advertise = cli.advertise;
  if (!cli.mps.empty()) options.node.mps = cli.mps;
  if (!cli.name.empty()) {
    if (auto ok = fb::checkNodeName(cli.name); !ok) return std::unexpected(ok.error());
    options.node.name = cli.name;
  }
  if (!options.node.orchestrator.empty()) {
    auto address = ft::orchestratorAddress(options.node.orchestrator);
    if (!address) return std::unexpected(address.error());
  }
  options.workerPath = cli.worker.empty() ? (selfDirectory() / "flyt-worker").string() : cli.worker;
  return options;
}

void reportReady(const std::vector<std::string>& endpoints, int readyFd) {
  std::string joined;
  for (const auto& endpoint : endpoints) joined += (joined.empty() ? "" : " and ") + endpoint;
  if (readyFd < 0) {
    fmt::print(stderr, "flyt-node: serving {}\n", joined);
    std::fflush(stderr);
    return;
  }
  std::string line;
  for (const auto& endpoint : endpoints) line += (line.empty() ? "" : " ") + endpoint;
  line += '\n';
  // Best effort: whoever asked for the report may have gone away.
  (void)!::write(readyFd, line.data(), line.size());
  ::close(readyFd);
}

}  // namespace

int main(int argc, char** argv) {
  CommandLine cli;
  CLI::App app{"flyt-node: serves Flyt sessions on this GPU host. Every session (one application "
               "process) gets its own flyt-worker process; clients are redirected to it after the "
               "handshake.",
               "flyt-node"};
  app.footer(std::string(kFooter) + flyt::transport::describeTransportKeys());
  app.add_option("--shm", cli.shm, "shared-memory endpoint name served as shm://NAME (default flyt)");
  app.add_option("--tcp", cli.tcp,
                 "TCP address HOST:PORT, or 'none' (default 127.0.0.1:7070; port 0 picks a free one)");
  app.add_option("--config", cli.config, "node.toml with [node] and [transport] tables")
      ->check(CLI::ExistingFile);
  app.add_option("--worker", cli.worker, "flyt-worker executable (default: next to flyt-node)");
  app.add_option("--executor", cli.executor,
                 "where workers run calls: auto (GPU, else the stand-in), cuda, standin")
      ->check(CLI::IsMember({"auto", "cuda", "standin"}));
  app.add_option("--orchestrator", cli.orchestrator,
                 "cluster mode: flyt-orchestrator's address HOST:PORT ('none': standalone, the default)");
  app.add_option("--name", cli.name, "the node's name in the cluster (default: the host name)");
  app.add_option("--advertise", cli.advertise,
                 "TCP address HOST:PORT given to clients on other hosts (default: the --tcp address, the host "
                 "name in place of 0.0.0.0)");
  app.add_option("--mps", cli.mps,
                 "SM shares: auto (MPS if its control daemon runs, else green contexts), off, manage (start and "
                 "stop the MPS control daemon)")
      ->check(CLI::IsMember({"auto", "off", "manage"}));
  app.add_option("--log", cli.log, "log level: trace, debug, info, warn, error, off (default info)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  app.add_option("--ready-fd", cli.readyFd,
                 "when serving, write the endpoints (one line, space-separated) to this descriptor and close "
                 "it, instead of the 'flyt-node: serving' line on stderr");
  // Standalone mode limits ([node] session_* keys): every session of this node gets them.
  app.add_option("--session-memory-limit", cli.sessionMemoryLimit,
                 "device memory each session may allocate: bytes, or 512MiB, 8GiB (default 0: unlimited)");
  app.add_option("--session-sm-percent", cli.sessionSmPercent,
                 "share of the GPU's SMs each session gets, 1..99 (default 0 or 100: the whole GPU)");
  app.add_option("--session-idle-timeout-s", cli.sessionIdleTimeoutS,
                 "end a session after this many seconds without a call (default 0: never)");
  CLI11_PARSE(app, argc, argv);

  // Before the first logger exists, and inherited by the workers.
  const bool logGiven = app.count("--log") > 0;
  if (logGiven || std::getenv("FLYT_LOG") == nullptr) ::setenv("FLYT_LOG", cli.log.c_str(), 1);

  auto options = resolveOptions(cli);
  if (!options) {
    fmt::print(stderr, "flyt-node: {}\n", options.error().describe());
    return 2;
  }
  // Every thread inherits this mask; the main thread alone takes the stop signals, with sigwait.
  sigset_t stopSignals;
  sigemptyset(&stopSignals);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stopSignals, sig);
  pthread_sigmask(SIG_BLOCK, &stopSignals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto node = flyt::backend::Node::start(std::move(*options));
  if (!node) {
    fmt::print(stderr, "flyt-node: {}\n", node.error().describe());
    return 1;
  }
  reportReady((*node)->endpoints(), cli.readyFd);
  int sig = 0;
  sigwait(&stopSignals, &sig);
  flyt::logger("node").info("{}: stopping", ::strsignal(sig));
  (*node)->stop();
  flyt::logger("node").info("stopped");
  return 0;
}
