// Placement: which GPU gets a new session. Pure functions over the store's rows, so they are
// tested without a server.
//
// Capacity of one GPU: the SM shares of its sessions sum to at most 100 (%), and the sum over its
// sessions of (memory quota + per-session overhead) is at most its memory. The overhead is the
// device memory a CUDA context takes itself (orchestrator.toml: session_overhead_mib).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "flyt/orchestration/config.hpp"
#include "flyt/orchestration/records.hpp"
#include "flyt/transport/error.hpp"

namespace flyt::orchestration {

// One GPU and what its sessions take of it.
struct GpuUsage {
  GpuRecord gpu;
  std::uint32_t smPercentUsed = 0;
  std::uint64_t memoryUsed = 0;  // quotas plus overhead
  std::uint32_t sessions = 0;

  [[nodiscard]] std::uint32_t smPercentFree() const { return smPercentUsed >= 100 ? 0 : 100 - smPercentUsed; }
  [[nodiscard]] std::uint64_t memoryFree() const {
    return memoryUsed >= gpu.memoryBytes ? 0 : gpu.memoryBytes - memoryUsed;
  }
};

// Every GPU with its usage, ordered by node name then uuid.
[[nodiscard]] std::vector<GpuUsage> gpuUsage(const std::vector<GpuRecord>& gpus,
                                             const std::vector<SessionRecord>& sessions,
                                             std::uint64_t sessionOverheadBytes);

struct PlacementRequest {
  std::uint32_t smPercent = 0;
  std::uint64_t memoryBytes = 0;  // the quota; placement adds the overhead
  std::uint64_t overheadBytes = 0;
};

// Nodes that cannot take a session now, each with why, as a phrase after the node's name
// ("is down").
using UnavailableNodes = std::map<std::string, std::string>;

// The chosen GPU among those that fit the request on nodes not in `unavailable`, by `policy`, ties
// broken by node name then uuid. A refusal (kUnavailable) names every GPU's free share and memory
// and why each unavailable node is: "no GPU has 50% of its SMs and 8.5 GiB free (8.0 GiB quota +
// 512.0 MiB per-session overhead): node-a GPU-1 has 25% and 70.0 GiB free; node-b is down".
[[nodiscard]] transport::Result<GpuUsage> place(const std::vector<GpuUsage>& usage,
                                                const std::vector<NodeRecord>& nodes,
                                                const UnavailableNodes& unavailable,
                                                const PlacementRequest& request, PlacementPolicy policy);

}  // namespace flyt::orchestration
