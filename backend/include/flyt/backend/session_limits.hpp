// What one session may use of its GPU: the device, a memory quota, a share of the SMs, an idle
// timeout. flyt-node decides them (standalone mode: [node] session_* keys or --session-* options;
// cluster mode: the orchestrator's grant) and passes them to the session's flyt-worker on its
// command line (node_workers.hpp); the worker enforces them (dispatcher.cpp: memory; the executor:
// SMs; worker_main.cpp: idle release). Plain values, freely copied.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

namespace flyt::backend {

struct SessionLimits {
  // The GPU the worker uses, as CUDA_VISIBLE_DEVICES takes it ("GPU-8c1e..."); empty: the
  // worker's default device (whatever CUDA_VISIBLE_DEVICES the node itself has).
  std::string gpuUuid;
  // Device memory the session may allocate, in bytes; 0: unlimited (the GPU's own size).
  std::uint64_t memoryBytes = 0;
  // Share of the GPU's SMs in percent; 0 or 100: the whole GPU.
  std::uint32_t smPercent = 0;
  // The worker ends the session after this many seconds without a message; 0: never.
  std::uint32_t idleTimeoutS = 0;
  // The SM share is enforced by the host's MPS control daemon (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE in
  // the worker's environment) instead of a green context.
  bool mps = false;

  [[nodiscard]] bool sharesSms() const noexcept { return smPercent > 0 && smPercent < 100; }
  // The worker makes a green context of the granted SMs (no MPS, a share below 100 %).
  [[nodiscard]] bool wantsGreenContext() const noexcept { return sharesSms() && !mps; }
};

// SMs of a green context for `percent` (1..99) of `total` SMs, when partitions come in multiples of
// `granularity` (8 on compute capability 9.x; the driver's sm.smCoscheduledAlignment): the share
// rounded DOWN to the granularity (a tenant never gets more than it was granted), but at least one
// granule (a share always runs somewhere). The driver's split reports what it really gave.
[[nodiscard]] constexpr std::uint32_t greenContextSmCount(std::uint32_t total, std::uint32_t percent,
                                                          std::uint32_t granularity) noexcept {
  if (granularity == 0) granularity = 1;
  const std::uint64_t share = std::uint64_t(total) * percent / 100;
  const auto rounded = static_cast<std::uint32_t>(share / granularity * granularity);
  return std::min(total, std::max(granularity, rounded));
}

// SMs the GPU stand-in reports under MPS for `percent` of `total`: MPS limits threads, not SM
// groups, so no granularity; at least one SM. (On a GPU the worker reports what the runtime itself
// says under the active thread percentage: 32 of 132 SMs at 25 %, 66 at 50 % on an H200.)
[[nodiscard]] constexpr std::uint32_t mpsSmCount(std::uint32_t total, std::uint32_t percent) noexcept {
  const std::uint64_t share = std::uint64_t(total) * percent / 100;
  return static_cast<std::uint32_t>(std::max<std::uint64_t>(1, share));
}

// MPS's own device-memory limit for a quota (CUDA_MPS_PINNED_DEVICE_MEM_LIMIT takes whole MiB): the
// quota rounded up to MiB plus kMpsMemoryHeadroomMiB for what the CUDA context itself takes from
// device memory (code, local memory, printf/malloc heaps) that the worker's accounting does not
// count. The worker's accounting stays the exact limit; MPS's is a backstop.
inline constexpr std::uint64_t kMpsMemoryHeadroomMiB = 512;
[[nodiscard]] constexpr std::uint64_t mpsPinnedMemoryMiB(std::uint64_t quotaBytes) noexcept {
  return (quotaBytes + (1ULL << 20) - 1) / (1ULL << 20) + kMpsMemoryHeadroomMiB;
}

}  // namespace flyt::backend
