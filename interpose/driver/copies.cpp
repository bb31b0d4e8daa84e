// Host/device copies of the driver API, through the session.
//
// The bytes travel inline with the messages, in chunks of at most the channel's largest payload:
// host-to-device chunks are batched (the last of a synchronous copy is waited for), device-to-host
// chunks come back with the replies. Device-to-device copies are generated functions (forward.hpp);
// cuMemcpy and cuMemcpyAsync, which take unified addresses, are sent as the copy their addresses
// make (the session's allocations are known here, driver_client.hpp); host-to-host is a memmove.
// TODO(issue 12): pinned memory in the data region (one DMA) and the pipelined staging ring, as the
// runtime library has them.
//
// An asynchronous copy from or to pageable memory returns once the bytes have been moved, which
// CUDA allows for pageable memory.
//
// Wire: cuMemcpyHtoD_v2 {u64 device, u64 bytes} + payload; cuMemcpyHtoDAsync_v2 the same and
// {u64 stream}; cuMemcpyDtoH_v2 {u64 device, u64 bytes} -> reply payload; cuMemcpyDtoHAsync_v2 the
// same and {u64 stream}.
#include <cuda.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <span>

#include "driver_client.hpp"

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

// `waits`: a synchronous copy (also one on the per-thread stream, _ptds), whose last chunk is waited for.
CUresult toDevice(CUdeviceptr device, const void* host, std::size_t bytes, std::optional<CUstream> stream, bool waits) {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  DriverState::get().streamBusy(stream.value_or(nullptr));
  if (bytes == 0) return CUDA_SUCCESS;
  if (host == nullptr || device == 0) return CUDA_ERROR_INVALID_VALUE;
  const Method method = stream ? Method::cuMemcpyHtoDAsync_v2 : Method::cuMemcpyHtoD_v2;
  const auto* source = static_cast<const std::byte*>(host);
  DriverCall call;
  const std::size_t chunk = call.session().maxPayloadBytes();
  if (chunk == 0) return CUDA_ERROR_DEVICE_UNAVAILABLE;
  for (std::size_t done = 0; done < bytes;) {
    const std::size_t n = std::min(chunk, bytes - done);
    const auto args = copyArgs(device + done, n, stream);
    const std::span<const std::byte> payload(source + done, n);
    done += n;
    if (done < bytes || !waits) {
      if (CUresult error = call.enqueue(method, args, payload); error != CUDA_SUCCESS) return error;
    } else {
      return call.call(method, args, payload, std::nullopt, true).error;
    }
  }
  return CUDA_SUCCESS;
}

CUresult toHost(void* host, CUdeviceptr device, std::size_t bytes, std::optional<CUstream> stream) {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  DriverState::get().streamBusy(stream.value_or(nullptr));
  if (bytes == 0) return CUDA_SUCCESS;
  if (host == nullptr || device == 0) return CUDA_ERROR_INVALID_VALUE;
  const Method method = stream ? Method::cuMemcpyDtoHAsync_v2 : Method::cuMemcpyDtoH_v2;
  auto* target = static_cast<std::byte*>(host);
  DriverCall call;
  const std::size_t chunk = call.session().maxPayloadBytes();
  if (chunk == 0) return CUDA_ERROR_DEVICE_UNAVAILABLE;
  for (std::size_t done = 0; done < bytes;) {
    const std::size_t n = std::min(chunk, bytes - done);
    auto outcome = call.call(method, copyArgs(device + done, n, stream), {}, std::nullopt, done == 0);
    if (outcome.error != CUDA_SUCCESS) return outcome.error;
    if (outcome.payload.size() != n) return CUDA_ERROR_UNKNOWN;
    std::memcpy(target + done, outcome.payload.data(), n);
    done += n;
  }
  return CUDA_SUCCESS;
}

bool isDevice(CUdeviceptr address) noexcept { return DriverState::get().allocation(address).has_value(); }

CUresult unified(CUdeviceptr dst, CUdeviceptr src, std::size_t bytes, std::optional<CUstream> stream, bool waits) {
  DriverState::get().streamBusy(stream.value_or(nullptr));
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
  if (srcDevice) return toHost(dstHost, src, bytes, stream);
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
  return toHost(dstHost, srcDevice, ByteCount, std::nullopt);
}
FLYT_CU_EXPORT CUresult cuMemcpyDtoH_v2_ptds(void* dstHost, CUdeviceptr srcDevice, size_t ByteCount) {
  return toHost(dstHost, srcDevice, ByteCount, CU_STREAM_PER_THREAD);
}
FLYT_CU_EXPORT CUresult cuMemcpyDtoHAsync_v2(void* dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream) {
  return toHost(dstHost, srcDevice, ByteCount, hStream);
}
FLYT_CU_EXPORT CUresult cuMemcpyDtoHAsync_v2_ptsz(void* dstHost, CUdeviceptr srcDevice, size_t ByteCount,
                                                  CUstream hStream) {
  return toHost(dstHost, srcDevice, ByteCount, perThread(hStream));
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
