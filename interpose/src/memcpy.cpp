// cudaMemcpy: host and device copies through the session (custom handler, sync).
//
// Wire: args = {u64 device address, u64 bytes, i32 kind}. Host-to-device data follows the call as
// inline payload, split into calls of at most the channel's payload limit (all but the last are
// batched); device-to-host data comes back as the reply's payload, one call per chunk.
// TODO(perf): the data region and pinned memory (issue "fast path") replace the inline payloads.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "client.hpp"
#include "flyt/api/codec.hpp"
#include "flyt/transport/log.hpp"

#define FLYT_CUDART_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose {
namespace {

std::vector<std::byte> copyArgs(std::uint64_t device, std::uint64_t bytes, cudaMemcpyKind kind) {
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(device);
  writer.put(bytes);
  writer.put(static_cast<std::int32_t>(kind));
  return args;
}

cudaError_t toDevice(void* dst, const void* src, std::size_t count) {
  auto& client = Client::get();
  const std::size_t chunk = std::max<std::size_t>(client.maxPayloadBytes() - 4096, 4096);
  const auto* from = static_cast<const std::byte*>(src);
  for (std::size_t done = 0;;) {
    const std::size_t n = std::min(chunk, count - done);
    const auto args = copyArgs(reinterpret_cast<std::uintptr_t>(dst) + done, n, cudaMemcpyHostToDevice);
    const std::span<const std::byte> payload(from + done, n);
    done += n;
    if (done == count) return client.call(api::Method::cudaMemcpy, args, payload).error;
    if (auto queued = client.enqueue(api::Method::cudaMemcpy, args, payload); queued != cudaSuccess) {
      return queued;
    }
  }
}

cudaError_t toHost(void* dst, const void* src, std::size_t count) {
  auto& client = Client::get();
  const std::size_t chunk = std::max<std::size_t>(client.maxPayloadBytes() - 4096, 4096);
  auto* to = static_cast<std::byte*>(dst);
  for (std::size_t done = 0; done < count || count == 0;) {
    const std::size_t n = std::min(chunk, count - done);
    auto outcome = client.call(api::Method::cudaMemcpy,
                               copyArgs(reinterpret_cast<std::uintptr_t>(src) + done, n,
                                        cudaMemcpyDeviceToHost));
    if (outcome.error != cudaSuccess) return outcome.error;
    if (outcome.payload.size() != n) return cudaErrorUnknown;
    std::memcpy(to + done, outcome.payload.data(), n);
    done += n;
    if (count == 0) break;
  }
  return cudaSuccess;
}

cudaError_t onDevice(void* dst, const void* src, std::size_t count) {
  std::vector<std::byte> args = copyArgs(reinterpret_cast<std::uintptr_t>(dst), count,
                                         cudaMemcpyDeviceToDevice);
  api::ArgWriter writer(args);
  writer.put(static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(src)));
  return Client::get().call(api::Method::cudaMemcpy, args).error;
}

}  // namespace
}  // namespace flyt::interpose

FLYT_CUDART_EXPORT cudaError_t cudaMemcpy(void* dst, const void* src, size_t count,
                                          enum cudaMemcpyKind kind) {
  using namespace flyt::interpose;
  if (count > 0 && (dst == nullptr || src == nullptr)) return recordResult(cudaErrorInvalidValue);
  switch (kind) {
    case cudaMemcpyHostToHost:
      if (count > 0) std::memmove(dst, src, count);
      return cudaSuccess;
    case cudaMemcpyHostToDevice: return recordResult(toDevice(dst, src, count));
    case cudaMemcpyDeviceToHost: return recordResult(toHost(dst, src, count));
    case cudaMemcpyDeviceToDevice: return recordResult(onDevice(dst, src, count));
    case cudaMemcpyDefault:
      // TODO: needs the client to know which addresses are device allocations (unified addressing).
      flyt::logger("interpose").warn("cudaMemcpy with cudaMemcpyDefault is not supported yet");
      return recordResult(cudaErrorNotSupported);
  }
  return recordResult(cudaErrorInvalidMemcpyDirection);
}

// Under --default-stream per-thread the header renames cudaMemcpy to this export. A synchronous
// copy is ordered the same way for both default streams, so it is the same call.
FLYT_CUDART_EXPORT cudaError_t cudaMemcpy_ptds(void* dst, const void* src, size_t count,
                                               enum cudaMemcpyKind kind) {
  return cudaMemcpy(dst, src, count, kind);
}
