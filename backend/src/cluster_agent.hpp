// A node's link to flyt-orchestrator (transport/schema/cluster.capnp): registers the node and its
// GPUs, sends heartbeats with the sessions it serves and those that ended, and carries out the
// orders the answers bring (kill a session, change a live session's memory quota).
//
// Threading: one thread of its own runs the KJ event loop and every RPC. The hooks are called on
// that thread; the other members may be called from any thread. The orchestrator being down is not
// an error of the node: the agent logs it once, retries every second, and re-registers when the
// orchestrator answers again. Sessions already running are not affected.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "flyt/transport/error.hpp"

namespace flyt::backend {

struct GpuInfo {
  std::string uuid;  // "GPU-..." (the stand-in's: "GPU-standin-<node name>")
  std::string name;
  std::uint32_t smCount = 0;
  std::uint64_t memoryBytes = 0;
  bool mps = false;  // an MPS control daemon serves it
};

struct NodeIdentity {
  std::string name;
  std::string hostId;
  std::string shmEndpoint;
  std::string tcpEndpoint;  // empty: none
  std::string executor;     // "cuda" or "standin"
  std::vector<GpuInfo> gpus;
};

struct ClusterHooks {
  std::function<std::vector<std::uint64_t>()> liveSessions;
  std::function<void(std::uint64_t sessionId)> kill;
  std::function<void(std::uint64_t sessionId, std::uint64_t memoryBytes)> setMemoryQuota;
};

class ClusterAgent {
 public:
  // Starts the agent's thread; it connects as a node (proving `token`, the orchestrator's
  // node_token, when not empty; transport/orchestrator_auth.hpp) and registers in the background.
  // A refused connection is logged with the orchestrator's reason and retried like an outage.
  // Fails only for an unusable address.
  [[nodiscard]] static transport::Result<std::unique_ptr<ClusterAgent>> start(std::string orchestrator,
                                                                              std::string token, NodeIdentity node,
                                                                              ClusterHooks hooks);
  ~ClusterAgent();  // stop()
  ClusterAgent(const ClusterAgent&) = delete;
  ClusterAgent& operator=(const ClusterAgent&) = delete;

  // The orchestrator's grant-verification key; empty until the node first registered.
  [[nodiscard]] std::vector<std::byte> publicKey() const;

  // A session started (heartbeat soon) or ended (reported with `reason` by the next heartbeat,
  // which is sent at once; kept until a heartbeat delivered it).
  void sessionStarted();
  void sessionEnded(std::uint64_t sessionId, std::string reason);

  // Sends a last heartbeat (bounded by about a second) so that the orchestrator learns of sessions
  // that ended while stopping, then stops the thread. Idempotent.
  void stop();

  struct Impl;

 private:
  explicit ClusterAgent(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> m_impl;
};

// The GPUs this node offers: NVIDIA's runtime's view (without creating a context) unless the
// executor is the stand-in or no GPU is found, then one stand-in GPU (kStandInMultiprocessors SMs,
// 16 GiB, as the stand-in executor reports). `mps` marks every GPU as served by MPS.
[[nodiscard]] std::vector<GpuInfo> discoverGpus(bool standIn, const std::string& nodeName, bool mps,
                                                std::string* executorName);

}  // namespace flyt::backend
