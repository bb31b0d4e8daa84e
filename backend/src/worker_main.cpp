// flyt-worker: serves exactly one session, started by flyt-node (see node.hpp, node_workers.hpp).
//
// Listens on --listen, reports the real endpoint on --ready-fd, accepts one channel within
// connectTimeout, admits only the Hello of --session, and then hands every message to the
// session's handler until the session ends. The session's limits come as options (--memory-limit,
// --sm-percent, --idle-timeout-s, --mps; node_workers.hpp); --control-fd is the node's control pipe
// (a live change of the memory limit), read on a thread of its own (worker_control.hpp). A worker
// given --control-fd also watches the process that started it (its node) and ends with SIGTERM when
// that process dies, SIGKILL included: no worker outlives its node.
//
// Exit status: 0 when the session ended with Goodbye or the application went away; 1 when the
// session broke (malformed message, transport failure); 2 for bad arguments; 3 when the client
// never came or was refused; 4 when the session was released for idleness (no message for
// --idle-timeout-s seconds: the application's next call fails with cudaErrorDevicesUnavailable, as
// for a node that went away). Logs go to stderr; stdout is reserved for forwarding device printf.
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <optional>
#include <string>

#include "flyt/backend/session_handler.hpp"
#include "flyt/transport/shm_channel.hpp"
#include "flyt/transport/handshake.hpp"
#include "flyt/transport/log.hpp"
#include "flyt/transport/transport.hpp"
#include "node_config.hpp"
#include "node_workers.hpp"
#include "worker_control.hpp"

namespace {

namespace fb = flyt::backend;
namespace ft = flyt::transport;

constexpr int kExitBroken = 1;
constexpr int kExitUsage = 2;
constexpr int kExitNoSession = 3;
constexpr int kExitIdle = fb::kWorkerExitIdle;

spdlog::logger& log() { return flyt::logger("worker"); }

struct CommandLine {
  std::string listen;
  std::string session;
  int readyFd = -1;
  std::string executor = "auto";
  std::string config;
  int controlFd = -1;
  fb::SessionLimits limits;
  pid_t parent = -1;  // getppid() at start: the node, when --control-fd says a node started us
};

// A pidfd of the node that started this worker (ControlReader watches it), or -1 when it cannot be
// had. kDisconnected when the node died before the worker got to look.
ft::Result<int> watchNode(pid_t parent) {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, parent, 0));
  if (fd < 0) {
    if (errno == ESRCH) return ft::fail(ft::Errc::kDisconnected, fmt::format("the node (pid {}) is gone", parent));
    log().warn("pidfd_open of the node (pid {}): {}; the worker will not notice the node's death",
               parent, std::strerror(errno));
    return -1;
  }
  // A node that died before pidfd_open may have left its pid to another process: then getppid()
  // already names the reaper instead.
  if (::getppid() != parent) {
    ::close(fd);
    return ft::fail(ft::Errc::kDisconnected, fmt::format("the node (pid {}) is gone", parent));
  }
  return fd;
}

ft::Result<std::uint64_t> parseSessionId(std::string_view text) {
  std::uint64_t id = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id, 16);
  if (ec != std::errc() || end != text.data() + text.size() || id == 0) {
    return ft::fail(ft::Errc::kInvalidArgument,
                    fmt::format("--session '{}' is not a non-zero hex session id", text));
  }
  return id;
}

ft::Result<ft::TransportConfig> loadConfig(const std::string& path) {
  if (path.empty()) return ft::transportConfigFromEnv();
  auto table = ft::loadTomlFile(path);
  if (!table) return std::unexpected(table.error());
  auto config = ft::transportConfigFromToml(*table, path);
  if (!config) return std::unexpected(config.error());
  return ft::applyTransportEnv(*config);
}

void reportReady(int fd, const std::string& endpoint) {
  const std::string line = endpoint + "\n";
  if (fd >= 0) {
    (void)!::write(fd, line.data(), line.size());  // the node may have given up on us already
    ::close(fd);
  }
}

// After the handshake: one message at a time until the session ends, or until it was idle (no
// message at all) for `idleTimeout` (zero: never).
int serve(ft::Channel& channel, fb::SessionHandler& handler, std::uint64_t sessionId,
          const ft::TransportConfig& config, std::chrono::seconds idleTimeout) {
  using Clock = std::chrono::steady_clock;
  auto lastMessage = Clock::now();
  for (;;) {
    auto wait = config.peerTimeout;
    if (idleTimeout.count() > 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(lastMessage + idleTimeout - Clock::now());
      if (left.count() <= 0) {
        log().info("session {:016x}: released after {} s without a call (idle timeout)", sessionId,
                   idleTimeout.count());
        return kExitIdle;
      }
      wait = std::min(wait, left);
    }
    auto incoming = channel.receive(wait);
    if (!incoming) {
      const auto& error = incoming.error();
      if (error.code == ft::Errc::kTimeout) continue;  // an idle application is not an error
      if (error.code == ft::Errc::kDisconnected) {
        log().info("session {:016x}: the application went away ({})", sessionId, error.message);
        return 0;
      }
      log().error("session {:016x}: {}", sessionId, error.describe());
      return kExitBroken;
    }
    lastMessage = Clock::now();
    auto state = handler.handle(*incoming, channel);
    if (!state) {
      if (state.error().code == ft::Errc::kDisconnected) {
        log().info("session {:016x}: the application went away ({})", sessionId,
                   state.error().message);
        return 0;
      }
      log().error("session {:016x} ends: {}", sessionId, state.error().describe());
      return kExitBroken;
    }
    if (*state == fb::SessionState::kEnded) {
      log().info("session {:016x}: ended by the application", sessionId);
      return 0;
    }
    lastMessage = Clock::now();  // a long call (a big copy, a synchronize) is not idleness
  }
}

int run(const CommandLine& cli) {
  auto sessionId = parseSessionId(cli.session);
  auto executor = fb::parseExecutor(cli.executor);
  auto config = loadConfig(cli.config);
  auto endpoint = ft::Endpoint::parse(cli.listen);
  for (const ft::Error* error : {sessionId ? nullptr : &sessionId.error(),
                                 executor ? nullptr : &executor.error(),
                                 config ? nullptr : &config.error(),
                                 endpoint ? nullptr : &endpoint.error()}) {
    if (error != nullptr) {
      log().error("{}", error->describe());
      return kExitUsage;
    }
  }
  // The listener goes away once the one channel is accepted, freeing the name or port.
  std::unique_ptr<ft::Channel> channel;
  {
    auto listener = ft::listen(*endpoint, *config);
    if (!listener) {
      log().error("session {:016x}: cannot listen on {}: {}", *sessionId, cli.listen,
                  listener.error().describe());
      return kExitNoSession;
    }
    reportReady(cli.readyFd, (*listener)->endpoint());
    auto accepted = (*listener)->accept(config->connectTimeout);
    if (!accepted) {
      log().error("session {:016x}: no client on {}: {}", *sessionId, (*listener)->endpoint(),
                  accepted.error().describe());
      return kExitNoSession;
    }
    channel = std::move(*accepted);
  }
  fb::SessionOptions options{*executor, *config};
  options.limits = cli.limits;
  options.memoryQuota = std::make_shared<fb::MemoryQuota>(cli.limits.memoryBytes);
  std::optional<fb::ControlReader> control;
  if (cli.controlFd >= 0) {
    auto node = watchNode(cli.parent);
    if (!node) {
      log().error("session {:016x}: {}", *sessionId, node.error().describe());
      return kExitNoSession;
    }
    control.emplace(cli.controlFd, options.memoryQuota, *sessionId, *node);
  }
  std::unique_ptr<fb::SessionHandler> handler;
  // The handler is made inside admit so that a refusal (say, --executor cuda without a GPU)
  // reaches the application as the handshake's answer.
  auto hello = ft::serverHandshake(*channel, config->connectTimeout,
                                   [&](const ft::HelloInfo& info) -> ft::Result<std::string> {
                                     if (info.sessionId != *sessionId) {
                                       return ft::fail(ft::Errc::kInvalidArgument,
                                                       fmt::format("this worker serves session {:016x}, not {:016x}",
                                                                   *sessionId, info.sessionId));
                                     }
                                     auto made = fb::makeSessionHandler(info, options);
                                     if (!made) return std::unexpected(made.error());
                                     handler = std::move(*made);
                                     return std::string();
                                   },
                                   config->authToken);
  if (!hello) {
    log().error("session {:016x}: handshake on {} failed: {}", *sessionId, channel->describe(),
                hello.error().describe());
    return kExitNoSession;
  }
  log().info("session {:016x}: serving client '{}' pid {} on {}", *sessionId, hello->clientName,
             hello->pid, channel->describe());
  const int status = serve(*channel, *handler, *sessionId, *config, std::chrono::seconds(cli.limits.idleTimeoutS));
  handler.reset();  // release the session's GPU state before the channel goes
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  CommandLine cli;
  CLI::App app{"flyt-worker: serves one Flyt session. Started by flyt-node, one per session; not "
               "meant to be run by hand except for debugging.",
               "flyt-worker"};
  app.add_option("--listen", cli.listen, "endpoint to listen on (shm://NAME or tcp://HOST:PORT)")
      ->required();
  app.add_option("--session", cli.session, "the session id (hex) this worker admits")->required();
  app.add_option("--ready-fd", cli.readyFd,
                 "descriptor to write the listening endpoint and a newline to, then close");
  app.add_option("--executor", cli.executor, "auto (GPU, else the stand-in), cuda, standin")
      ->check(CLI::IsMember({"auto", "cuda", "standin"}));
  app.add_option("--config", cli.config, "node.toml ([transport] is read)")->check(CLI::ExistingFile);
  app.add_option("--control-fd", cli.controlFd,
                 "descriptor of the node's control pipe (memory-limit lines; see node_workers.hpp)");
  app.add_option("--memory-limit", cli.limits.memoryBytes, "device memory the session may allocate, bytes (0: unlimited)");
  app.add_option("--sm-percent", cli.limits.smPercent, "share of the GPU's SMs, 1..99 (0 or 100: all)")
      ->check(CLI::Range(0, 100));
  app.add_option("--idle-timeout-s", cli.limits.idleTimeoutS, "end the session after this many idle seconds (0: never)");
  app.add_flag("--mps", cli.limits.mps, "the SM share is enforced by MPS (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE)");
  cli.parent = ::getppid();
  CLI11_PARSE(app, argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  const int status = run(cli);
  // iceoryx deregisters this process from RouDi in a static destructor and waits for the answer
  // without a bound; a RouDi that is gone or stalled (its node was killed) would keep the worker
  // alive forever after its session ended. Exit handlers get this long; then the process ends
  // anyway (RouDi releases what it still holds once it sees the process end).
  ft::endProcessWithin(ft::kExitGrace, status);
  return status;
}
