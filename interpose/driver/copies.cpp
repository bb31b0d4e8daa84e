// Host/device copies of the driver API, through the session. How the bytes travel depends on where
// the host memory is (backend/src/driver/serve_memory.cpp is the other side):
//
//   pinned   cuMemAllocHost/cuMemHostAlloc memory lies in the session's data region, which the
//            worker registered with the GPU (host_memory.cpp). The call names it (a BulkRef): the
//            copy is one DMA from or to the application's own buffer. A synchronous copy waits for
//            it; an asynchronous one is batched and returns at once, with CUDA's own semantics.
//   small    A host-to-device copy of less than 256 KiB travels inline with the batch and is not
//            waited for (the bytes are copied into the batch, so the application may reuse its
//            buffer at once): an asynchronous one from pageable memory, and a synchronous one from
//            any host memory whose destination lies inside one of the session's allocations known
//            here (not managed memory). The worker performs a synchronous copy synchronously, in
//            order, before any later call, so nothing the application can observe differs from a
//            waited copy except where the worker's copy fails: as for every batched call, that error
//            is reported by the next call that synchronises. Copies the client cannot vouch for (an
//            address it does not know, a range past its allocation) are waited for.
//   pageable Everything else is cut into chunks and pipelined (../src/pipelined_copy.hpp): through
//            the region's staging ring on shared memory, inline over TCP. The copy is complete when
//            the call returns, which CUDA allows for pageable memory, asynchronous or not.
// Device-to-device copies are generated functions (forward.hpp); cuMemcpy and cuMemcpyAsync, which
// take unified addresses, are sent as the copy their addresses make (the session's allocations are
// known here, driver_client.hpp); host-to-host is a memmove.
//
// Wire: cuMemcpyHtoD_v2 {u64 device, u64 bytes} + the bytes (inline or a BulkRef into the region);
// cuMemcpyHtoDAsync_v2 the same and {u64 stream}; cuMemcpyDtoH_v2 {u64 device, u64 bytes} -> the
// bytes in the reply, or into the region when the call carries a BulkRef; cuMemcpyDtoHAsync_v2 the
// same and {u64 stream}.
#include <cuda.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <span>

#include "driver_client.hpp"
#include "pipelined_copy.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {
namespace {

std::vector<std::byte> copyArgs(CUdeviceptr device, std::uint64_t bytes, std::optional<CUstream> stream) {
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(static_cast<std::uint64_t>(device));
  writer.put(bytes);
  if (stream) writer.put(wireHandle(*stream));
  return args;
}

// The session as a pipelined copy uses it (pipelined_copy.hpp), with DriverCall's rule for errors
// of earlier batched calls: the first chunk's reply reports them.
class Pipeline {
 public:
  explicit Pipeline(DriverCall& call) : m_call(call) {}
  const transport::TransportConfig& config() const noexcept { return m_call.session().config(); }
  transport::DataRegion* region() noexcept { return m_call.session().region(); }
  std::size_t maxPayloadBytes() noexcept { return m_call.session().maxPayloadBytes(); }
  std::expected<std::uint64_t, CUresult> submit(Method method, std::span<const std::byte> args,
                                                std::span<const std::byte> payload = {},
                                                std::optional<RegionBulk> region = std::nullopt) noexcept {
    return m_call.session().submit(method, args, payload, region);
  }
  Outcome await(std::uint64_t sequence, std::optional<std::span<std::byte>> target = std::nullopt) noexcept {
    auto outcome = m_call.session().await(sequence, target);
    m_call.settle(outcome, m_first);
    m_first = false;
    return outcome;
  }

 private:
  DriverCall& m_call;
  bool m_first = true;
};

// A copy naming the application's pinned memory in the region: one call. A synchronous copy on a
// stream (the per-thread default stream's, _ptds) is sent asynchronously and its stream waited for.
CUresult pinnedCopy(Method method, const RegionBulk& host, CUdeviceptr device, std::optional<CUstream> stream,
                    bool waits) {
  const auto args = copyArgs(device, host.length, stream);
  if (!stream) return DriverCall().call(method, args, {}, host, true).error;
  {
    DriverCall call;
    if (!waits) return call.enqueue(method, args, {}, host);
    if (CUresult error = call.call(method, args, {}, host, true).error; error != CUDA_SUCCESS) return error;
  }
  return cuStreamSynchronize(*stream);
}

// `waits`: a synchronous copy (also one on the per-thread stream, _ptds).
CUresult toDevice(CUdeviceptr device, const void* host, std::size_t bytes, std::optional<CUstream> stream, bool waits) {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  const StreamWork work(stream.value_or(nullptr));
  if (bytes == 0) return CUDA_SUCCESS;
  if (host == nullptr || device == 0) return CUDA_ERROR_INVALID_VALUE;
  // Managed memory as the host side is device memory at the same address (managed_memory.cpp):
  // the copy is on the device, never through host pages Flyt would fault on while holding the session.
  if (const auto managed = static_cast<CUdeviceptr>(reinterpret_cast<std::uintptr_t>(host));
      DriverState::get().isManaged(managed)) {
    return stream && !waits ? cuMemcpyDtoDAsync_v2(device, managed, bytes, *stream) : cuMemcpyDtoD_v2(device, managed, bytes);
  }
  const Method method = stream ? Method::cuMemcpyHtoDAsync_v2 : Method::cuMemcpyHtoD_v2;
  const bool small = bytes < kStagedMinBytes;
  const bool inlineSync = waits && small && DriverState::get().vouchesFor(device, bytes);
  // Looked up before taking the session: the region's allocator lock never nests inside it.
  if (!inlineSync) {
    if (auto pinned = CuClient::get().findRegionHost(host, bytes)) return pinnedCopy(method, *pinned, device, stream, waits);
  }
  const auto* source = static_cast<const std::byte*>(host);
  DriverCall call;
  const std::size_t chunk = call.session().maxPayloadBytes();
  if (chunk == 0) return CUDA_ERROR_DEVICE_UNAVAILABLE;
  if ((!waits || inlineSync) && small && bytes <= chunk) {
    return call.enqueue(method, copyArgs(device, bytes, stream), {source, bytes});
  }
  // (A transport whose messages carry less than `bytes`: pipelined below, pinned memory too.)
  Pipeline pipeline(call);
  auto args = [&](std::size_t offset, std::size_t n) { return copyArgs(device + offset, n, stream); };
  return pipelinedToDevice(pipeline, method, args, source, bytes, CUDA_SUCCESS, CUDA_ERROR_UNKNOWN);
}

CUresult toHost(void* host, CUdeviceptr device, std::size_t bytes, std::optional<CUstream> stream, bool waits) {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  const StreamWork work(stream.value_or(nullptr));
  if (bytes == 0) return CUDA_SUCCESS;
  if (host == nullptr || device == 0) return CUDA_ERROR_INVALID_VALUE;
  if (const auto managed = static_cast<CUdeviceptr>(reinterpret_cast<std::uintptr_t>(host));
      DriverState::get().isManaged(managed)) {
    return stream && !waits ? cuMemcpyDtoDAsync_v2(managed, device, bytes, *stream) : cuMemcpyDtoD_v2(managed, device, bytes);
  }
  const Method method = stream ? Method::cuMemcpyDtoHAsync_v2 : Method::cuMemcpyDtoH_v2;
  if (auto pinned = CuClient::get().findRegionHost(host, bytes)) return pinnedCopy(method, *pinned, device, stream, waits);
  DriverCall call;
  if (call.session().maxPayloadBytes() == 0) return CUDA_ERROR_DEVICE_UNAVAILABLE;
  Pipeline pipeline(call);
  auto args = [&](std::size_t offset, std::size_t n) { return copyArgs(device + offset, n, stream); };
  return pipelinedToHost(pipeline, method, args, static_cast<std::byte*>(host), bytes, CUDA_SUCCESS, CUDA_ERROR_UNKNOWN);
}

bool isDevice(CUdeviceptr address) noexcept { return DriverState::get().allocation(address).has_value(); }

CUresult unified(CUdeviceptr dst, CUdeviceptr src, std::size_t bytes, std::optional<CUstream> stream, bool waits) {
  const StreamWork work(stream.value_or(nullptr));
  const bool dstDevice = isDevice(dst);
  const bool srcDevice = isDevice(src);
  auto* dstHost = reinterpret_cast<void*>(static_cast<std::uintptr_t>(dst));
  const auto* srcHost = reinterpret_cast<const void*>(static_cast<std::uintptr_t>(src));
  if (dstDevice && srcDevice) {
    if (!stream) return cuMemcpyDtoD_v2(dst, src, bytes);
    if (!waits) return cuMemcpyDtoDAsync_v2(dst, src, bytes, *stream);
    return cuMemcpyDtoD_v2_ptds(dst, src, bytes);
  }
  if (dstDevice) return toDevice(dst, srcHost, bytes, stream, waits);
  if (srcDevice) return toHost(dstHost, src, bytes, stream, waits);
  if (bytes == 0) return CUDA_SUCCESS;
  if (dstHost == nullptr || srcHost == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (stream) {
    if (CUresult error = cuStreamSynchronize(*stream); error != CUDA_SUCCESS) return error;
  }
  std::memmove(dstHost, srcHost, bytes);
  return CUDA_SUCCESS;
}

}  // namespace
}  // namespace flyt::interpose::cu

using namespace flyt::interpose::cu;
namespace api = flyt::api;

FLYT_CU_EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dstDevice, const void* srcHost, size_t ByteCount) {
  return toDevice(dstDevice, srcHost, ByteCount, std::nullopt, true);
}
FLYT_CU_EXPORT CUresult cuMemcpyHtoD_v2_ptds(CUdeviceptr dstDevice, const void* srcHost, size_t ByteCount) {
  return toDevice(dstDevice, srcHost, ByteCount, CU_STREAM_PER_THREAD, true);
}
FLYT_CU_EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dstDevice, const void* srcHost, size_t ByteCount,
                                             CUstream hStream) {
  return toDevice(dstDevice, srcHost, ByteCount, hStream, false);
}
FLYT_CU_EXPORT CUresult cuMemcpyHtoDAsync_v2_ptsz(CUdeviceptr dstDevice, const void* srcHost, size_t ByteCount,
                                                  CUstream hStream) {
  return toDevice(dstDevice, srcHost, ByteCount, perThread(hStream), false);
}

FLYT_CU_EXPORT CUresult cuMemcpyDtoH_v2(void* dstHost, CUdeviceptr srcDevice, size_t ByteCount) {
  return toHost(dstHost, srcDevice, ByteCount, std::nullopt, true);
}
FLYT_CU_EXPORT CUresult cuMemcpyDtoH_v2_ptds(void* dstHost, CUdeviceptr srcDevice, size_t ByteCount) {
  return toHost(dstHost, srcDevice, ByteCount, CU_STREAM_PER_THREAD, true);
}
FLYT_CU_EXPORT CUresult cuMemcpyDtoHAsync_v2(void* dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream) {
  return toHost(dstHost, srcDevice, ByteCount, hStream, false);
}
FLYT_CU_EXPORT CUresult cuMemcpyDtoHAsync_v2_ptsz(void* dstHost, CUdeviceptr srcDevice, size_t ByteCount,
                                                  CUstream hStream) {
  return toHost(dstHost, srcDevice, ByteCount, perThread(hStream), false);
}

FLYT_CU_EXPORT CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount) {
  return unified(dst, src, ByteCount, std::nullopt, true);
}
FLYT_CU_EXPORT CUresult cuMemcpy_ptds(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount) {
  return unified(dst, src, ByteCount, CU_STREAM_PER_THREAD, true);
}
FLYT_CU_EXPORT CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream) {
  return unified(dst, src, ByteCount, hStream, false);
}
FLYT_CU_EXPORT CUresult cuMemcpyAsync_ptsz(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount, CUstream hStream) {
  return unified(dst, src, ByteCount, perThread(hStream), false);
}
