// cudaMemcpy and cudaMemcpyAsync: host and device copies through the session (custom handlers).
//
// Wire (method cudaMemcpy): args = {u64 device address, u64 bytes, i32 kind[, u64 source address for
// device-to-device]}; (method cudaMemcpyAsync) the same with {u64 stream} after the kind. The host
// side is the call's one BulkRef. How the bytes travel depends on where the host memory is
// (backend/src/dispatcher.cpp serveCopy is the other side):
//
//   pinned   The application's cudaMallocHost/cudaHostAlloc memory lies in the session's data region,
//            which the worker registered with the GPU (host_memory.cpp). The BulkRef names it: the
//            copy is one DMA from or to the application's own buffer. cudaMemcpy waits for it;
//            cudaMemcpyAsync is batched and returns at once, with CUDA's own semantics.
//   staged   Pageable memory, on shared memory: the copy is cut into slots of the region's staging
//   inline   ring and pipelined; over TCP the chunks travel inline, pipelined the same way
//            (pipelined_copy.hpp, shared with the driver library).
//
// cudaMemcpyAsync from or to pageable memory returns once the bytes have been moved (for
// device-to-host, once they are in `dst`): CUDA allows that for pageable memory, and it is what
// NVIDIA's runtime does for device-to-host. Device-to-device copies are only enqueued.
// Host-to-host: memmove (the async form synchronises the stream first).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

#include "client.hpp"
#include "pipelined_copy.hpp"
#include "flyt/api/codec.hpp"
#include "flyt/transport/log.hpp"

#define FLYT_CUDART_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose {
namespace {

// `stream` is set for cudaMemcpyAsync's calls only.
std::vector<std::byte> copyArgs(std::uint64_t device, std::uint64_t bytes, cudaMemcpyKind kind,
                                std::optional<cudaStream_t> stream) {
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(device);
  writer.put(bytes);
  writer.put(static_cast<std::int32_t>(kind));
  if (stream) writer.put(static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(*stream)));
  return args;
}

api::Method methodFor(std::optional<cudaStream_t> stream) {
  return stream ? api::Method::cudaMemcpyAsync : api::Method::cudaMemcpy;
}

cudaError_t pipelinedToDevice(Client::Session& session, std::uint64_t dst, const std::byte* src,
                              std::size_t count, std::optional<cudaStream_t> stream) {
  auto args = [&](std::size_t offset, std::size_t n) { return copyArgs(dst + offset, n, cudaMemcpyHostToDevice, stream); };
  return flyt::interpose::pipelinedToDevice(session, methodFor(stream), args, src, count, cudaSuccess, cudaErrorUnknown);
}

cudaError_t pipelinedToHost(Client::Session& session, std::byte* dst, std::uint64_t src, std::size_t count,
                            std::optional<cudaStream_t> stream) {
  auto args = [&](std::size_t offset, std::size_t n) { return copyArgs(src + offset, n, cudaMemcpyDeviceToHost, stream); };
  return flyt::interpose::pipelinedToHost(session, methodFor(stream), args, dst, count, cudaSuccess, cudaErrorUnknown);
}

// A host range in the data region's pinned memory: one call naming it.
cudaError_t pinnedCopy(const RegionBulk& host, std::uint64_t device, cudaMemcpyKind kind,
                       std::optional<cudaStream_t> stream) {
  auto session = Client::get().session();
  const auto args = copyArgs(device, host.length, kind, stream);
  if (stream) return session.enqueue(api::Method::cudaMemcpyAsync, args, {}, host);
  return session.call(api::Method::cudaMemcpy, args, {}, host).error;
}

cudaError_t toDevice(void* dst, const void* src, std::size_t count, std::optional<cudaStream_t> stream) {
  const auto device = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(dst));
  // Looked up before taking the session: the region's allocator lock never nests inside it.
  if (auto pinned = Client::get().findRegionHost(src, count)) return pinnedCopy(*pinned, device, cudaMemcpyHostToDevice, stream);
  auto session = Client::get().session();
  return pipelinedToDevice(session, device, static_cast<const std::byte*>(src), count, stream);
}

cudaError_t toHost(void* dst, const void* src, std::size_t count, std::optional<cudaStream_t> stream) {
  const auto device = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(src));
  if (auto pinned = Client::get().findRegionHost(dst, count)) return pinnedCopy(*pinned, device, cudaMemcpyDeviceToHost, stream);
  auto session = Client::get().session();
  return pipelinedToHost(session, static_cast<std::byte*>(dst), device, count, stream);
}

cudaError_t onDevice(void* dst, const void* src, std::size_t count, std::optional<cudaStream_t> stream) {
  std::vector<std::byte> args = copyArgs(reinterpret_cast<std::uintptr_t>(dst), count,
                                         cudaMemcpyDeviceToDevice, stream);
  api::ArgWriter(args).put(static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(src)));
  if (stream) return Client::get().enqueue(api::Method::cudaMemcpyAsync, args);
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
    case cudaMemcpyHostToDevice: return recordResult(toDevice(dst, src, count, std::nullopt));
    case cudaMemcpyDeviceToHost: return recordResult(toHost(dst, src, count, std::nullopt));
    case cudaMemcpyDeviceToDevice: return recordResult(onDevice(dst, src, count, std::nullopt));
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
    case cudaMemcpyHostToDevice: return recordResult(toDevice(dst, src, count, stream));
    case cudaMemcpyDeviceToHost: return recordResult(toHost(dst, src, count, stream));
    case cudaMemcpyDeviceToDevice: return recordResult(onDevice(dst, src, count, stream));
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
