// cudaMemcpy and cudaMemcpyAsync: host and device copies through the session (custom handlers).
//
// Wire (method cudaMemcpy): args = {u64 device address, u64 bytes, i32 kind[, u64 source address for
// device-to-device]}. Host-to-device data follows the call as inline payload, split into calls of at
// most the channel's payload limit (all but the last are batched); device-to-host data comes back as
// the reply's payload, one call per chunk.
// Wire (method cudaMemcpyAsync): the same with {u64 stream} after the kind. Host-to-device: batched
// (async), the data captured into the batch at call time; the worker copies on the stream from its
// copy of the payload and waits for that stream before it drops the copy. Device-to-host: a sync
// call per chunk; the worker copies on the stream and waits for it before replying, and the bytes
// are written to `dst` before cudaMemcpyAsync returns: a stronger order than CUDA's (the copy is
// done when the call returns), which no correct program can tell from the real one except by
// timing. Device-to-device: batched. Host-to-host: the stream is synchronised, then memmove.
// TODO(perf): the data region and pinned memory (issue "fast path") replace the inline payloads.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "client.hpp"
#include "flyt/api/codec.hpp"
#include "flyt/transport/log.hpp"

#define FLYT_CUDART_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose {
namespace {

// `stream` is set for cudaMemcpyAsync's calls only.
std::vector<std::byte> copyArgs(std::uint64_t device, std::uint64_t bytes, cudaMemcpyKind kind,
                                std::optional<cudaStream_t> stream = std::nullopt) {
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(device);
  writer.put(bytes);
  writer.put(static_cast<std::int32_t>(kind));
  if (stream) writer.put(static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(*stream)));
  return args;
}

std::size_t chunkBytes(Client& client) {
  return std::max<std::size_t>(client.maxPayloadBytes() - 4096, 4096);
}

cudaError_t toDevice(void* dst, const void* src, std::size_t count) {
  auto& client = Client::get();
  const std::size_t chunk = chunkBytes(client);
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
  const std::size_t chunk = chunkBytes(client);
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

cudaError_t toDeviceOn(cudaStream_t stream, void* dst, const void* src, std::size_t count) {
  auto& client = Client::get();
  const std::size_t chunk = chunkBytes(client);
  const auto* from = static_cast<const std::byte*>(src);
  for (std::size_t done = 0; done < count;) {
    const std::size_t n = std::min(chunk, count - done);
    const auto args = copyArgs(reinterpret_cast<std::uintptr_t>(dst) + done, n, cudaMemcpyHostToDevice, stream);
    if (auto queued = client.enqueue(api::Method::cudaMemcpyAsync, args, {from + done, n}); queued != cudaSuccess) {
      return queued;
    }
    done += n;
  }
  return cudaSuccess;
}

cudaError_t toHostOn(cudaStream_t stream, void* dst, const void* src, std::size_t count) {
  auto& client = Client::get();
  const std::size_t chunk = chunkBytes(client);
  auto* to = static_cast<std::byte*>(dst);
  for (std::size_t done = 0; done < count;) {
    const std::size_t n = std::min(chunk, count - done);
    auto outcome = client.call(api::Method::cudaMemcpyAsync,
                               copyArgs(reinterpret_cast<std::uintptr_t>(src) + done, n,
                                        cudaMemcpyDeviceToHost, stream));
    if (outcome.error != cudaSuccess) return outcome.error;
    if (outcome.payload.size() != n) return cudaErrorUnknown;
    std::memcpy(to + done, outcome.payload.data(), n);
    done += n;
  }
  return cudaSuccess;
}

cudaError_t onDeviceOn(cudaStream_t stream, void* dst, const void* src, std::size_t count) {
  std::vector<std::byte> args = copyArgs(reinterpret_cast<std::uintptr_t>(dst), count,
                                         cudaMemcpyDeviceToDevice, stream);
  api::ArgWriter(args).put(static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(src)));
  return Client::get().enqueue(api::Method::cudaMemcpyAsync, args);
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

FLYT_CUDART_EXPORT cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count,
                                               enum cudaMemcpyKind kind, cudaStream_t stream) {
  using namespace flyt::interpose;
  if (count == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) return recordResult(cudaErrorInvalidValue);
  switch (kind) {
    case cudaMemcpyHostToHost:
      if (auto drained = ::cudaStreamSynchronize(stream); drained != cudaSuccess) return drained;
      std::memmove(dst, src, count);
      return cudaSuccess;
    case cudaMemcpyHostToDevice: return recordResult(toDeviceOn(stream, dst, src, count));
    case cudaMemcpyDeviceToHost: return recordResult(toHostOn(stream, dst, src, count));
    case cudaMemcpyDeviceToDevice: return recordResult(onDeviceOn(stream, dst, src, count));
    case cudaMemcpyDefault:
      flyt::logger("interpose").warn("cudaMemcpyAsync with cudaMemcpyDefault is not supported yet");
      return recordResult(cudaErrorNotSupported);
  }
  return recordResult(cudaErrorInvalidMemcpyDirection);
}

// Under --default-stream per-thread, stream 0 means the calling thread's default stream.
FLYT_CUDART_EXPORT cudaError_t cudaMemcpyAsync_ptsz(void* dst, const void* src, size_t count,
                                                    enum cudaMemcpyKind kind, cudaStream_t stream) {
  return cudaMemcpyAsync(dst, src, count, kind, stream == nullptr ? cudaStreamPerThread : stream);
}
