#include "node.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <list>
#include <map>
#include <mutex>
#include <thread>

#include "flyt/transport/handshake.hpp"
#include "flyt/transport/log.hpp"
#include "flyt/transport/segment.hpp"
#include "flyt/transport/shm_channel.hpp"
#include "flyt/transport/transport.hpp"
#include "cluster_agent.hpp"
#include "flyt/transport/grant.hpp"
#include "flyt/transport/orchestrator_client.hpp"
#include "mps.hpp"
#include "node_workers.hpp"

namespace flyt::backend {
namespace {

using namespace std::chrono_literals;
using transport::Errc;
using transport::fail;
using Clock = std::chrono::steady_clock;

// How often accept loops look at the stop flag.
constexpr auto kAcceptPoll = 200ms;
// Handshakes in flight at once (each a thread, each bounded by connectTimeout plus its worker's
// start). While that many run, the accept loops accept nothing more: new connections wait in the
// kernel's backlog, and their clients' connect_timeout_ms bounds the wait. (Closing them instead, as
// before, failed clients of a burst of 128 sessions starting at once.)
constexpr std::size_t kMaxHandshakes = 256;
// stop(): how long workers get between SIGTERM and SIGKILL.
constexpr auto kWorkerGrace = 2s;

spdlog::logger& log() { return flyt::logger("node"); }

struct Session {
  std::uint64_t id = 0;
  std::string clientName;
  std::uint32_t clientPid = 0;
  std::string via;  // the node endpoint the client came in on
  Clock::time_point started;
  int controlFd = -1;  // the worker's control pipe (live memory quota), owned
  std::string endReason;  // set when the node itself ends the session ("killed by the orchestrator")
};

struct Handshake {
  std::thread thread;
  std::atomic<bool> done{false};
};

struct Serving {
  std::unique_ptr<transport::Listener> listener;
  transport::Endpoint endpoint;  // as listening (tcp: real port)
  std::thread acceptor;
};

// Without auth_token, anyone who reaches the port can run code on this node's GPU as this user.
// Not refused (a trusted private network may be the point), but said loudly.
void warnIfOpen(const transport::Endpoint& tcp, const transport::TransportConfig& config) {
  if (!config.authToken.empty()) {
    log().info("TCP clients on {} must prove they hold auth_token", tcp.toString());
  } else if (!transport::isLoopbackHost(tcp.host)) {
    log().warn("!!! {} is reachable from other hosts and no auth_token is set: ANYONE who can reach it can "
               "run sessions on this node. Set [transport] auth_token_file (or FLYT_AUTH_TOKEN) !!!",
               tcp.toString());
  }
}

}  // namespace

struct Node::Impl {
  NodeOptions options;
  std::unique_ptr<transport::EmbeddedRouDi> roudi;
  std::vector<Serving> serving;
  std::atomic<bool> stopping{false};
  bool stopped = false;

  std::mutex handshakesMutex;
  std::list<std::unique_ptr<Handshake>> handshakes;

  // Workers by pid. The mutex is held across fork and insertion, so the reaper never sees a pid
  // it does not know.
  std::mutex mutex;
  std::condition_variable changed;
  std::map<pid_t, Session> workers;
  std::uint64_t spawned = 0;
  bool reaperStop = false;
  std::thread reaper;

  // Cluster mode (options.node.orchestrator set): the link to the orchestrator, this node's GPUs,
  // and the session ids whose grants were used (a grant admits one session, once), with expiry.
  std::unique_ptr<ClusterAgent> agent;
  std::string nodeName;
  std::vector<GpuInfo> gpus;
  bool mps = false;          // SM shares go through the host's MPS control daemon
  bool startedMps = false;   // mps = "manage" and this node started the daemon: it stops it
  std::map<std::uint64_t, std::int64_t> usedGrants;

  transport::Result<SessionLimits> sessionLimits(const transport::HelloInfo& hello);
  transport::Result<void> startCluster();
  void setUpMps();
  void discoverNodeGpus();
  std::string executorName;  // "cuda" or "standin", what the node offers
  std::vector<std::uint64_t> liveSessions();
  void killSession(std::uint64_t sessionId);
  void setMemoryQuota(std::uint64_t sessionId, std::uint64_t bytes);

  transport::Result<void> listenOn(const transport::Endpoint& endpoint);
  void acceptLoop(Serving& slot);
  void startHandshake(std::unique_ptr<transport::Channel> channel, const transport::Endpoint& via);
  void pruneHandshakes(bool all);
  bool handshakeSlotFree();  // fewer than kMaxHandshakes in flight (prunes finished ones)
  transport::Result<std::string> admit(const transport::HelloInfo& hello,
                                       const transport::Endpoint& via);
  std::string workerEndpoint(std::uint64_t sessionId, const transport::Endpoint& via) const;
  void reapLoop();
  void onWorkerExit(pid_t pid, int status);
  void stopWorkers();
};

transport::Result<void> Node::Impl::listenOn(const transport::Endpoint& endpoint) {
  auto listener = transport::listen(endpoint, options.transport);
  if (!listener) {
    auto error = listener.error();
    error.message = fmt::format("cannot listen on {}: {}", endpoint.toString(), error.message);
    return std::unexpected(error);
  }
  auto real = transport::Endpoint::parse((*listener)->endpoint());
  if (!real) return std::unexpected(real.error());
  serving.push_back(Serving{std::move(*listener), *real, {}});
  return {};
}

void Node::Impl::acceptLoop(Serving& slot) {
  while (!stopping.load()) {
    if (!handshakeSlotFree()) {
      std::this_thread::sleep_for(10ms);
      continue;
    }
    auto channel = slot.listener->accept(kAcceptPoll);
    if (!channel) {
      if (channel.error().code != Errc::kTimeout) {
        log().warn("accepting on {}: {}", slot.endpoint.toString(), channel.error().describe());
        std::this_thread::sleep_for(kAcceptPoll);  // a persistent failure must not spin
      }
      continue;
    }
    startHandshake(std::move(*channel), slot.endpoint);
  }
}

bool Node::Impl::handshakeSlotFree() {
  pruneHandshakes(false);
  std::lock_guard lock(handshakesMutex);
  return handshakes.size() < kMaxHandshakes;
}

void Node::Impl::pruneHandshakes(bool all) {
  std::lock_guard lock(handshakesMutex);
  for (auto it = handshakes.begin(); it != handshakes.end();) {
    if (all || (*it)->done.load()) {
      (*it)->thread.join();
      it = handshakes.erase(it);
    } else {
      ++it;
    }
  }
}

// Each handshake runs on its own thread so that a silent or malformed client delays nobody else;
// serverHandshake bounds it by connectTimeout (plus the worker's start, also bounded).
void Node::Impl::startHandshake(std::unique_ptr<transport::Channel> channel,
                                const transport::Endpoint& via) {
  std::lock_guard lock(handshakesMutex);
  auto& entry = *handshakes.emplace_back(std::make_unique<Handshake>());
  entry.thread = std::thread([this, &entry, via, ch = std::move(channel)]() mutable {
    auto hello = transport::serverHandshake(
        *ch, options.transport.connectTimeout,
        [&](const transport::HelloInfo& info) { return admit(info, via); }, options.transport.authToken);
    if (!hello) {
      // A probe (connect, then close) is how `flyt run` checks that a node is up: not worth a warning.
      const auto level = hello.error().code == Errc::kDisconnected ? spdlog::level::debug
                                                                   : spdlog::level::warn;
      log().log(level, "handshake on {} failed: {}", ch->describe(), hello.error().describe());
    }
    ch.reset();
    entry.done.store(true);
  });
}

std::string Node::Impl::workerEndpoint(std::uint64_t sessionId, const transport::Endpoint& via) const {
  if (via.kind == transport::Endpoint::Kind::kShm) {
    return fmt::format("shm://{}-w{:016x}", options.node.shmName, sessionId);
  }
  return transport::Endpoint{transport::Endpoint::Kind::kTcp, via.host, 0, {}}.toString();
}

// Standalone: the node's session limits for everyone. Cluster: what the session's grant says, once
// the grant verified with the orchestrator's key (caller holds `mutex`).
transport::Result<SessionLimits> Node::Impl::sessionLimits(const transport::HelloInfo& hello) {
  SessionLimits limits = options.node.sessionLimits;
  if (!agent) {
    limits.mps = mps && limits.sharesSms();
    return limits;
  }
  const auto key = agent->publicKey();
  if (key.empty()) {
    return fail(Errc::kUnavailable, "this node has not registered with its orchestrator yet; try again shortly");
  }
  const auto now = transport::unixMillis();
  auto grant = transport::checkGrantFor(key, hello.token, nodeName, hello.sessionId, now);
  if (!grant) return std::unexpected(grant.error());
  std::erase_if(usedGrants, [&](const auto& used) { return used.second < now; });
  if (!usedGrants.emplace(hello.sessionId, grant->expiresAtMs).second) {
    return fail(Errc::kInvalidArgument, fmt::format("the grant for session {:016x} was already used", hello.sessionId));
  }
  const bool known = std::any_of(gpus.begin(), gpus.end(), [&](const GpuInfo& gpu) { return gpu.uuid == grant->gpuUuid; });
  if (!known) return fail(Errc::kInvalidArgument, fmt::format("this node has no GPU {}", grant->gpuUuid));
  limits.gpuUuid = grant->gpuUuid.starts_with("GPU-standin-") ? "" : grant->gpuUuid;
  limits.memoryBytes = grant->memoryBytes;
  limits.smPercent = grant->smPercent;
  limits.idleTimeoutS = grant->idleTimeoutS;
  limits.mps = mps && limits.sharesSms();
  log().info("session {:016x}: grant of tenant '{}': GPU {}, {}% of its SMs, {} bytes", hello.sessionId,
             grant->tenant, grant->gpuUuid, grant->smPercent, grant->memoryBytes);
  return limits;
}

transport::Result<std::string> Node::Impl::admit(const transport::HelloInfo& hello,
                                                 const transport::Endpoint& via) {
  WorkerLaunch launch{options.workerPath, workerEndpoint(hello.sessionId, via), hello.sessionId,
                      options.node.executor, options.configPath, {}};
  std::optional<SpawnedWorker> worker;
  {
    std::lock_guard lock(mutex);
    if (stopping.load()) return fail(Errc::kUnavailable, "the node is stopping");
    for (const auto& [pid, session] : workers) {
      if (session.id == hello.sessionId) {
        return fail(Errc::kInvalidArgument,
                    fmt::format("session {:016x} is already served", hello.sessionId));
      }
    }
    if (via.kind == transport::Endpoint::Kind::kShm) {
      const auto shmSessions = std::count_if(workers.begin(), workers.end(), [](const auto& entry) {
        return entry.second.via.starts_with("shm://");
      });
      if (shmSessions >= static_cast<std::ptrdiff_t>(options.transport.shmSessions)) {
        log().warn("session {:016x} from '{}' pid {} refused: {} shared-memory sessions run (shm_sessions)",
                   hello.sessionId, hello.clientName, hello.pid, shmSessions);
        return fail(Errc::kBusy,
                    fmt::format("this node already serves {} shared-memory sessions, the most its host's shared "
                                "memory pools are sized for (shm_sessions in the node's [transport]; clients ask "
                                "again until connect_timeout_ms): connect over tcp://, or raise shm_sessions",
                                shmSessions));
      }
    }
    auto limits = sessionLimits(hello);
    if (!limits) {
      log().warn("session {:016x} from '{}' pid {} refused: {}", hello.sessionId, hello.clientName, hello.pid,
                 limits.error().message);
      return std::unexpected(limits.error());
    }
    launch.limits = *limits;
    auto spawnedWorker = spawnWorker(launch);
    if (!spawnedWorker) {
      log().error("session {:016x}: cannot start {}: {}", hello.sessionId, launch.workerPath,
                  spawnedWorker.error().describe());
      return fail(Errc::kUnavailable, "the node could not start a worker");
    }
    worker.emplace(std::move(*spawnedWorker));
    workers.emplace(worker->pid(), Session{hello.sessionId, hello.clientName, hello.pid, via.toString(),
                                           Clock::now(), worker->releaseControlFd(), {}});
    ++spawned;
  }
  changed.notify_all();
  auto endpoint = worker->awaitReady(options.transport.connectTimeout);
  if (!endpoint) {
    log().error("session {:016x}: worker pid {} did not start: {}", hello.sessionId, worker->pid(),
                endpoint.error().describe());
    ::kill(worker->pid(), SIGKILL);  // the reaper logs its end
    return fail(Errc::kUnavailable, "the node's worker for this session did not start");
  }
  log().info("session {:016x} started: client '{}' pid {} via {}, worker pid {} at {}",
             hello.sessionId, hello.clientName, hello.pid, via.toString(), worker->pid(), *endpoint);
  if (agent) agent->sessionStarted();
  return *endpoint;
}

void Node::Impl::reapLoop() {
  for (;;) {
    std::uint64_t seen;
    {
      std::lock_guard lock(mutex);
      seen = spawned;
    }
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, 0);
    if (pid > 0) {
      onWorkerExit(pid, status);
      continue;
    }
    if (errno == EINTR) continue;
    // ECHILD: no worker runs; sleep until one is spawned or the node stops.
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return reaperStop || spawned != seen; });
    if (reaperStop) return;
  }
}

void Node::Impl::onWorkerExit(pid_t pid, int status) {
  std::unique_lock lock(mutex);
  auto it = workers.find(pid);
  if (it == workers.end()) {
    log().warn("reaped unknown child pid {}: {}", pid, describeWaitStatus(status));
    return;
  }
  const Session session = std::move(it->second);
  workers.erase(it);
  lock.unlock();
  changed.notify_all();
  if (session.controlFd >= 0) ::close(session.controlFd);
  const bool idle = WIFEXITED(status) && WEXITSTATUS(status) == kWorkerExitIdle;
  if (agent) {
    agent->sessionEnded(session.id, !session.endReason.empty() ? session.endReason
                                    : idle ? std::string("released for idleness")
                                           : fmt::format("worker {}", describeWaitStatus(status)));
  }
  const bool clean = (WIFEXITED(status) && WEXITSTATUS(status) == 0) || idle;
  const bool terminated = WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM && stopping.load();
  const double seconds = std::chrono::duration<double>(Clock::now() - session.started).count();
  log().log(clean || terminated ? spdlog::level::info : spdlog::level::warn,
            "session {:016x} ended: client '{}' pid {}, worker pid {} {} after {:.1f} s{}", session.id,
            session.clientName, session.clientPid, pid, describeWaitStatus(status), seconds,
            idle ? " (released for idleness)" : "");
}

void Node::Impl::stopWorkers() {
  std::unique_lock lock(mutex);
  for (const auto& [pid, session] : workers) ::kill(pid, SIGTERM);
  if (!changed.wait_for(lock, kWorkerGrace, [&] { return workers.empty(); })) {
    for (const auto& [pid, session] : workers) {
      log().warn("worker pid {} (session {:016x}) ignored SIGTERM for {} s: SIGKILL", pid,
                 session.id, kWorkerGrace.count());
      ::kill(pid, SIGKILL);
    }
    changed.wait_for(lock, 5s, [&] { return workers.empty(); });
  }
  reaperStop = true;
  lock.unlock();
  changed.notify_all();
}

// [node] mps: "auto" uses a running MPS control daemon, "manage" starts one (and stop() stops it),
// "off" never uses MPS. Without MPS, SM shares are green contexts in the workers.
void Node::Impl::setUpMps() {
  const auto& mode = options.node.mps;
  if (mode == "manage" && !mpsControlRunning()) {
    if (auto started = startMpsDaemon(); started) {
      startedMps = true;
      log().info("started the MPS control daemon (pipe directory {})", mpsPipeDirectory());
    } else {
      log().warn("cannot start the MPS control daemon: {}; SM shares use green contexts",
                 started.error().describe());
    }
  }
  mps = mode != "off" && mpsControlRunning();
  if (mps) log().info("SM shares are enforced by MPS (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE)");
}

std::vector<std::uint64_t> Node::Impl::liveSessions() {
  std::lock_guard lock(mutex);
  std::vector<std::uint64_t> ids;
  for (const auto& [pid, session] : workers) ids.push_back(session.id);
  return ids;
}

// The worker's death ends the session: its client's next call fails with cudaErrorDevicesUnavailable.
void Node::Impl::killSession(std::uint64_t sessionId) {
  std::lock_guard lock(mutex);
  for (auto& [pid, session] : workers) {
    if (session.id != sessionId) continue;
    session.endReason = "killed on the orchestrator's order";
    ::kill(pid, SIGKILL);
  }
}

void Node::Impl::setMemoryQuota(std::uint64_t sessionId, std::uint64_t bytes) {
  std::lock_guard lock(mutex);
  for (auto& [pid, session] : workers) {
    if (session.id != sessionId || session.controlFd < 0) continue;
    if (auto sent = sendMemoryLimit(session.controlFd, bytes); !sent) {
      log().warn("session {:016x}: cannot change its memory quota: {}", sessionId, sent.error().describe());
    }
  }
}

// Registers with the orchestrator in the background (the node serves standalone sessions of
// nobody meanwhile: every Hello is refused until the orchestrator's key is known).
void Node::Impl::discoverNodeGpus() {
  nodeName = options.node.name;
  if (nodeName.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    nodeName = host;
  }
  gpus = discoverGpus(options.node.executor == ExecutorKind::kStandIn, nodeName, false, &executorName);
}

transport::Result<void> Node::Impl::startCluster() {
  NodeIdentity identity{nodeName, transport::hostIdentity(), {}, {}, executorName, gpus};
  for (const auto& slot : serving) {
    if (slot.endpoint.kind == transport::Endpoint::Kind::kShm) {
      identity.shmEndpoint = slot.endpoint.toString();
      continue;
    }
    std::string host = slot.endpoint.host;
    if (host == "0.0.0.0" || host == "::") {
      char name[256] = {};
      ::gethostname(name, sizeof name - 1);
      host = name;
    }
    identity.tcpEndpoint = fmt::format("tcp://{}:{}", host, slot.endpoint.port);
  }
  if (!options.node.advertise.empty()) {
    auto address = transport::orchestratorAddress(options.node.advertise);
    if (!address) return std::unexpected(address.error());
    identity.tcpEndpoint = "tcp://" + *address;
  }
  for (const auto& gpu : gpus) {
    log().info("offering {} ({}, {} SMs, {} MiB{})", gpu.uuid, gpu.name, gpu.smCount, gpu.memoryBytes >> 20,
               gpu.mps ? ", MPS" : "");
  }
  auto started = ClusterAgent::start(
      options.node.orchestrator, options.node.orchestratorToken, std::move(identity),
      ClusterHooks{[this] { return liveSessions(); }, [this](std::uint64_t id) { killSession(id); },
                   [this](std::uint64_t id, std::uint64_t bytes) { setMemoryQuota(id, bytes); }});
  if (!started) return std::unexpected(started.error());
  agent = std::move(*started);
  return {};
}

Node::Node(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}

Node::~Node() { stop(); }

transport::Result<std::unique_ptr<Node>> Node::start(NodeOptions options) {
  if (::access(options.workerPath.c_str(), X_OK) != 0) {
    return fail(Errc::kInvalidArgument,
                fmt::format("worker executable '{}' is missing or not executable (use --worker)",
                            options.workerPath));
  }
  if (auto ok = checkNodeShmName(options.node.shmName); !ok) return std::unexpected(ok.error());
  if (auto swept = transport::sweepStaleSegments(); !swept) {
    log().warn("sweeping stale region segments: {}", swept.error().describe());
  } else {
    for (const auto& name : *swept) log().info("removed stale region segment {}", name);
  }
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  // GPUs are discovered before an MPS daemon is started: a process that initialised CUDA while the
  // daemon ran is one of its clients, and the daemon's "quit" at stop() would wait for the node.
  if (!impl->options.node.orchestrator.empty()) impl->discoverNodeGpus();
  impl->setUpMps();
  for (auto& gpu : impl->gpus) gpu.mps = impl->mps;
  auto roudi = transport::EmbeddedRouDi::startIfAbsent(impl->options.transport);
  if (!roudi) return std::unexpected(roudi.error());
  impl->roudi = std::move(*roudi);
  log().info("{} the host's iceoryx RouDi", impl->roudi->owns() ? "started" : "attached to");

  const auto& config = impl->options.node;
  auto shm = transport::Endpoint::parse(fmt::format("shm://{}", config.shmName));
  if (!shm) return std::unexpected(shm.error());
  impl->serving.reserve(2);
  if (auto ok = impl->listenOn(*shm); !ok) return std::unexpected(ok.error());
  if (config.tcp) {
    if (auto ok = impl->listenOn(*config.tcp); !ok) return std::unexpected(ok.error());
    warnIfOpen(*config.tcp, impl->options.transport);
  }
  // From here on the Node owns the threads: an early return destroys it, which stops them.
  std::unique_ptr<Node> node(new Node(std::move(impl)));
  Impl& self = *node->m_impl;
  self.reaper = std::thread([&self] { self.reapLoop(); });
  if (!self.options.node.orchestrator.empty()) {
    if (auto ok = self.startCluster(); !ok) return std::unexpected(ok.error());
  }
  for (auto& slot : self.serving) slot.acceptor = std::thread([&self, &slot] { self.acceptLoop(slot); });
  return node;
}

std::vector<std::string> Node::endpoints() const {
  std::vector<std::string> out;
  for (const auto& slot : m_impl->serving) out.push_back(slot.endpoint.toString());
  return out;
}

void Node::stop() {
  Impl& self = *m_impl;
  if (self.stopped) return;
  self.stopped = true;
  self.stopping.store(true);
  for (auto& slot : self.serving) {
    if (slot.acceptor.joinable()) slot.acceptor.join();
  }
  self.pruneHandshakes(true);
  self.serving.clear();
  if (self.reaper.joinable()) {
    self.stopWorkers();
    self.reaper.join();
  }
  if (self.agent) self.agent->stop();  // after the workers: the last heartbeat reports their end
  if (self.startedMps) {
    if (auto stopped = stopMpsDaemon(); !stopped) {
      log().warn("stopping the MPS control daemon: {}", stopped.error().describe());
    } else {
      log().info("stopped the MPS control daemon");
    }
  }
  self.roudi.reset();  // last: every channel and listener of this process is gone
}

}  // namespace flyt::backend
