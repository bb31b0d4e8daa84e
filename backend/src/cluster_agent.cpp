#include "cluster_agent.hpp"

#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <kj/async-io.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "flyt/backend/executor.hpp"
#include "flyt/transport/log.hpp"
#include "flyt/transport/orchestrator_client.hpp"
#include "flyt/transport/orchestrator_connection.hpp"
#include "flyt/wire/cluster.capnp.h"

namespace flyt::backend {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

spdlog::logger& log() { return flyt::logger("node"); }

// How long one RPC may take before the orchestrator counts as unreachable.
constexpr auto kCallTimeout = 3s;
// Between attempts to reach an unreachable orchestrator.
constexpr auto kRetry = 1s;
// How often the agent's loop looks for pokes and the stop flag.
constexpr auto kTick = 20ms;
// stop(): the last heartbeat's bound.
constexpr auto kLastHeartbeat = 1s;

// Thrown inside the event loop to leave the current connection (the orchestrator asked us to
// re-register, or we are stopping).
struct Reconnect {};

using transport::OrchestratorConnection;

}  // namespace

struct ClusterAgent::Impl {
  std::string address;
  std::string token;  // the orchestrator's node_token; empty: none
  NodeIdentity node;
  ClusterHooks hooks;
  std::thread thread;
  std::atomic<bool> stopping{false};
  std::atomic<bool> poked{true};

  mutable std::mutex mutex;
  std::vector<std::byte> publicKey;
  std::vector<std::pair<std::uint64_t, std::string>> ended;  // not yet delivered
  std::chrono::milliseconds heartbeat{1000};

  void run();
  void serve(OrchestratorConnection& link);
  void registerNode(OrchestratorConnection& link);
  bool sendHeartbeat(OrchestratorConnection& link, std::chrono::milliseconds bound);
  void sleepFor(std::chrono::milliseconds span) const {
    const auto until = Clock::now() + span;
    while (!stopping.load() && Clock::now() < until) std::this_thread::sleep_for(kTick);
  }
};

void ClusterAgent::Impl::registerNode(OrchestratorConnection& link) {
  auto request = link.orchestrator().registerNodeRequest();
  auto info = request.initNode();
  info.setProtocolVersion(wire::CLUSTER_PROTOCOL_VERSION);
  info.setName(node.name);
  info.setHostId(node.hostId);
  info.setShmEndpoint(node.shmEndpoint);
  info.setTcpEndpoint(node.tcpEndpoint);
  info.setExecutor(node.executor);
  auto gpus = info.initGpus(static_cast<unsigned>(node.gpus.size()));
  for (unsigned i = 0; i < node.gpus.size(); ++i) {
    const auto& gpu = node.gpus[i];
    gpus[i].setUuid(gpu.uuid);
    gpus[i].setName(gpu.name);
    gpus[i].setSmCount(gpu.smCount);
    gpus[i].setMemoryBytes(gpu.memoryBytes);
    gpus[i].setMps(gpu.mps);
  }
  auto response = link.wait(request.send(), kCallTimeout);
  auto key = response.getPublicKey();
  std::lock_guard lock(mutex);
  publicKey.assign(reinterpret_cast<const std::byte*>(key.begin()), reinterpret_cast<const std::byte*>(key.end()));
  heartbeat = std::chrono::milliseconds(std::clamp<std::uint32_t>(response.getHeartbeatMs(), 50, 60000));
}

// True when the orchestrator answered. Orders are carried out before returning.
bool ClusterAgent::Impl::sendHeartbeat(OrchestratorConnection& link, std::chrono::milliseconds bound) {
  poked.store(false);
  const auto live = hooks.liveSessions();
  std::vector<std::pair<std::uint64_t, std::string>> sending;
  {
    std::lock_guard lock(mutex);
    sending = ended;
  }
  auto request = link.orchestrator().heartbeatRequest();
  auto report = request.initReport();
  report.setName(node.name);
  auto liveList = report.initLive(static_cast<unsigned>(live.size()));
  for (unsigned i = 0; i < live.size(); ++i) liveList.set(i, live[i]);
  auto endedList = report.initEnded(static_cast<unsigned>(sending.size()));
  for (unsigned i = 0; i < sending.size(); ++i) {
    endedList[i].setSessionId(sending[i].first);
    endedList[i].setReason(sending[i].second);
  }
  auto response = link.wait(request.send(), bound);
  {
    std::lock_guard lock(mutex);
    // Delivered: drop exactly what was sent (more may have ended meanwhile).
    std::erase_if(ended, [&](const auto& entry) {
      return std::find(sending.begin(), sending.end(), entry) != sending.end();
    });
  }
  auto orders = response.getOrders();
  for (std::uint64_t id : orders.getKill()) {
    log().info("orchestrator: end session {:016x}", id);
    hooks.kill(id);
  }
  for (auto change : orders.getMemoryQuotas()) {
    log().info("orchestrator: session {:016x} memory quota is now {} bytes", change.getSessionId(),
               change.getMemoryBytes());
    hooks.setMemoryQuota(change.getSessionId(), change.getMemoryBytes());
  }
  if (orders.getReregister()) {
    log().warn("the orchestrator does not know this node (restarted with another database?): registering again");
    throw Reconnect{};
  }
  return true;
}

void ClusterAgent::Impl::serve(OrchestratorConnection& link) {
  registerNode(link);
  log().info("registered with the orchestrator at {} as '{}' ({} GPU(s)); heartbeat every {} ms", address,
             node.name, node.gpus.size(), heartbeat.count());
  auto last = Clock::time_point{};
  while (!stopping.load()) {
    std::chrono::milliseconds interval;
    {
      std::lock_guard lock(mutex);
      interval = heartbeat;
    }
    if (poked.load() || Clock::now() - last >= interval) {
      sendHeartbeat(link, kCallTimeout);
      last = Clock::now();
    }
    std::this_thread::sleep_for(kTick);
  }
  // Stopping: tell the orchestrator which sessions ended while the node stopped its workers.
  sendHeartbeat(link, kLastHeartbeat);
}

void ClusterAgent::Impl::run() {
  bool reported = false;  // one warning per outage, not one per second
  auto outage = [&](const std::string& what, bool refused) {
    if (reported) return;
    log().log(refused ? spdlog::level::err : spdlog::level::warn,
              "{}; retrying every {} s (running sessions are not affected)", what,
              std::chrono::duration_cast<std::chrono::seconds>(kRetry).count());
    reported = true;
  };
  while (!stopping.load()) {
    bool reconnectAtOnce = false;
    auto link = OrchestratorConnection::open(address, transport::OrchestratorRole::kNode, token, kCallTimeout);
    if (!link) {
      outage(link.error().message, link.error().code == transport::Errc::kUnauthenticated);
      sleepFor(kRetry);
      continue;
    }
    kj::Maybe<kj::Exception> thrown = kj::runCatchingExceptions([&] {
      try {
        serve(**link);
      } catch (const Reconnect&) {
        reconnectAtOnce = true;
      }
      reported = false;
    });
    KJ_IF_MAYBE (e, thrown) {
      outage(fmt::format("orchestrator at {}: {}", address, transport::plainRpcMessage(e->getDescription().cStr())),
             false);
    }
    if (!reconnectAtOnce) sleepFor(kRetry);
  }
}

ClusterAgent::ClusterAgent(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}

ClusterAgent::~ClusterAgent() { stop(); }

transport::Result<std::unique_ptr<ClusterAgent>> ClusterAgent::start(std::string orchestrator, std::string token,
                                                                     NodeIdentity node, ClusterHooks hooks) {
  auto address = transport::orchestratorAddress(orchestrator);
  if (!address) return std::unexpected(address.error());
  auto impl = std::make_unique<Impl>();
  impl->address = *address;
  impl->token = std::move(token);
  impl->node = std::move(node);
  impl->hooks = std::move(hooks);
  Impl& self = *impl;
  std::unique_ptr<ClusterAgent> agent(new ClusterAgent(std::move(impl)));
  self.thread = std::thread([&self] { self.run(); });
  return agent;
}

std::vector<std::byte> ClusterAgent::publicKey() const {
  std::lock_guard lock(m_impl->mutex);
  return m_impl->publicKey;
}

void ClusterAgent::sessionStarted() { m_impl->poked.store(true); }

void ClusterAgent::sessionEnded(std::uint64_t sessionId, std::string reason) {
  {
    std::lock_guard lock(m_impl->mutex);
    m_impl->ended.emplace_back(sessionId, std::move(reason));
  }
  m_impl->poked.store(true);
}

void ClusterAgent::stop() {
  if (!m_impl->thread.joinable()) return;
  m_impl->stopping.store(true);
  m_impl->thread.join();
}

std::vector<GpuInfo> discoverGpus(bool standIn, const std::string& nodeName, bool mps, std::string* executorName) {
  std::vector<GpuInfo> gpus;
  int count = 0;
  if (!standIn && ::cudaGetDeviceCount(&count) == cudaSuccess) {
    for (int device = 0; device < count; ++device) {
      cudaDeviceProp prop{};
      if (::cudaGetDeviceProperties(&prop, device) != cudaSuccess) continue;
      const auto* u = reinterpret_cast<const unsigned char*>(prop.uuid.bytes);
      GpuInfo gpu;
      gpu.uuid = fmt::format("GPU-{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-"
                             "{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
                             u[13], u[14], u[15]);
      gpu.name = prop.name;
      gpu.smCount = static_cast<std::uint32_t>(prop.multiProcessorCount);
      gpu.memoryBytes = prop.totalGlobalMem;
      gpu.mps = mps;
      gpus.push_back(std::move(gpu));
    }
  }
  if (!gpus.empty()) {
    *executorName = "cuda";
    return gpus;
  }
  // Must match what the stand-in executor reports (backend/src/standin_executor.cpp).
  *executorName = "standin";
  gpus.push_back(GpuInfo{fmt::format("GPU-standin-{}", nodeName), "Flyt GPU stand-in (test double)",
                         kStandInMultiprocessors, 16ULL << 30, false});
  return gpus;
}

}  // namespace flyt::backend
