#include "flyt/orchestration/placement.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <tuple>

#include "flyt/transport/units.hpp"

namespace flyt::orchestration {

using transport::formatBytes;
namespace {

bool fits(const GpuUsage& gpu, const PlacementRequest& request) {
  return gpu.smPercentFree() >= request.smPercent &&
         gpu.memoryFree() >= request.memoryBytes + request.overheadBytes;
}

std::string refusal(const std::vector<GpuUsage>& usage, const std::vector<NodeRecord>& nodes,
                    const UnavailableNodes& unavailable, const PlacementRequest& request) {
  if (nodes.empty()) return "no GPU node has registered with the orchestrator";
  std::string details;
  bool allDown = true;
  auto add = [&](const std::string& text) { details += (details.empty() ? "" : "; ") + text; };
  for (const auto& node : nodes) {
    if (auto it = unavailable.find(node.name); it != unavailable.end()) {
      add(fmt::format("{} {}", node.name, it->second));
      allDown = allDown && it->second == "is down";
      continue;
    }
    bool any = false;
    for (const auto& gpu : usage) {
      if (gpu.gpu.node != node.name) continue;
      any = true;
      add(fmt::format("{} {} has {}% and {} free", node.name, gpu.gpu.uuid, gpu.smPercentFree(),
                      formatBytes(gpu.memoryFree())));
    }
    if (!any) add(fmt::format("{} has no GPU", node.name));
  }
  if (unavailable.size() == nodes.size()) {
    return fmt::format("{}: {}", allDown ? "no GPU node is up" : "no GPU node can take the session", details);
  }
  const std::string why = request.overheadBytes == 0
                              ? std::string()
                              : fmt::format(" ({} quota + {} per-session overhead)", formatBytes(request.memoryBytes),
                                            formatBytes(request.overheadBytes));
  return fmt::format("no GPU has {}% of its SMs and {} free{}: {}", request.smPercent,
                     formatBytes(request.memoryBytes + request.overheadBytes), why, details);
}

}  // namespace

std::vector<GpuUsage> gpuUsage(const std::vector<GpuRecord>& gpus, const std::vector<SessionRecord>& sessions,
                               std::uint64_t sessionOverheadBytes) {
  std::map<std::pair<std::string, std::string>, GpuUsage> byKey;
  for (const auto& gpu : gpus) byKey[{gpu.node, gpu.uuid}].gpu = gpu;
  for (const auto& session : sessions) {
    auto it = byKey.find({session.node, session.gpuUuid});
    // A session on a GPU its node no longer reports still counts nowhere: the node's heartbeat
    // reconciles it.
    if (it == byKey.end()) continue;
    it->second.smPercentUsed += session.smPercent;
    it->second.memoryUsed += session.memoryBytes + sessionOverheadBytes;
    ++it->second.sessions;
  }
  std::vector<GpuUsage> out;
  out.reserve(byKey.size());
  for (auto& [key, usage] : byKey) out.push_back(std::move(usage));
  return out;
}

transport::Result<GpuUsage> place(const std::vector<GpuUsage>& usage, const std::vector<NodeRecord>& nodes,
                                  const UnavailableNodes& unavailable, const PlacementRequest& request,
                                  PlacementPolicy policy) {
  const GpuUsage* best = nullptr;
  // Free share and memory left after placing; best-fit minimises them, spread maximises them.
  // Equal candidates keep the first in (node, uuid) order, which `usage` is sorted by.
  auto leftAfter = [&](const GpuUsage& gpu) {
    return std::make_tuple(gpu.smPercentFree() - request.smPercent,
                           gpu.memoryFree() - request.memoryBytes - request.overheadBytes);
  };
  for (const auto& gpu : usage) {
    if (unavailable.contains(gpu.gpu.node) || !fits(gpu, request)) continue;
    if (best == nullptr) {
      best = &gpu;
      continue;
    }
    const bool better = policy == PlacementPolicy::kBestFit ? leftAfter(gpu) < leftAfter(*best)
                                                            : leftAfter(gpu) > leftAfter(*best);
    if (better) best = &gpu;
  }
  if (best == nullptr) {
    return transport::fail(transport::Errc::kUnavailable, refusal(usage, nodes, unavailable, request));
  }
  return *best;
}

}  // namespace flyt::orchestration
