// 2D copies (cuMemcpy2D, cuMemcpy2DUnaligned, cuMemcpy2DAsync) between host memory, device memory
// and CUDA arrays.
//
// The host side's rows travel packed (width bytes each), in chunks of whole rows that fit one
// message; the worker copies them with its driver's 2D copy from or into the packed buffer. Device
// to device is one call. An array side counts as a device side.
//
// Wire (cuMemcpy2D_v2, and cuMemcpy2DAsync_v2 with {u64 stream} after the height): {u8 direction
// (1 host to device, 2 device to host, 3 device to device), u64 dst, u64 dst pitch, u64 src,
// u64 src pitch, u64 width, u64 height, [u64 stream,] u8 arrays (bit 0: dst is an array, bit 1:
// src), then per array side (dst first) {u64 array, u64 x in bytes, u64 y}}; an array side's
// address and pitch are 0. Host to device: payload = the packed rows; device to host: the reply's
// payload.
#include <cuda.h>

#include <cstring>
#include <optional>

#include "driver_client.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {
namespace {

enum class Direction : std::uint8_t { kToDevice = 1, kToHost = 2, kOnDevice = 3 };

struct Side {
  bool device = false;
  std::uintptr_t address = 0;  // the first byte copied (x and y offsets applied)
  std::size_t pitch = 0;
  CUarray array = nullptr;     // an array side (device = true): its origin is x and y
  std::size_t x = 0, y = 0;
};

std::optional<Side> sideOf(CUmemorytype type, const void* host, CUdeviceptr device, CUarray array, std::size_t x,
                           std::size_t y, std::size_t pitch) {
  if (type == CU_MEMORYTYPE_ARRAY) {
    if (array == nullptr) return std::nullopt;
    Side side;
    side.device = true;
    side.array = array;
    side.x = x;
    side.y = y;
    return side;
  }
  if (type == CU_MEMORYTYPE_UNIFIED) type = DriverState::get().allocation(device) ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST;
  Side side;
  side.pitch = pitch;
  switch (type) {
    case CU_MEMORYTYPE_HOST: side.address = reinterpret_cast<std::uintptr_t>(host); break;
    case CU_MEMORYTYPE_DEVICE: side.address = static_cast<std::uintptr_t>(device); side.device = true; break;
    default: return std::nullopt;
  }
  if (type == CU_MEMORYTYPE_HOST && host == nullptr && device != 0) side.address = static_cast<std::uintptr_t>(device);
  side.address += y * pitch + x;
  return side;
}

std::vector<std::byte> copyArgs(Direction direction, const Side& dst, const Side& src, std::size_t width,
                                std::size_t rows, std::optional<CUstream> stream) {
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(static_cast<std::uint8_t>(direction));
  writer.put(static_cast<std::uint64_t>(dst.address));
  writer.put(static_cast<std::uint64_t>(dst.pitch));
  writer.put(static_cast<std::uint64_t>(src.address));
  writer.put(static_cast<std::uint64_t>(src.pitch));
  writer.put(static_cast<std::uint64_t>(width));
  writer.put(static_cast<std::uint64_t>(rows));
  if (stream) writer.put(wireHandle(*stream));
  writer.put(static_cast<std::uint8_t>((dst.array != nullptr ? 1 : 0) | (src.array != nullptr ? 2 : 0)));
  for (const Side* side : {&dst, &src}) {
    if (side->array == nullptr) continue;
    writer.put(wireHandle(side->array));
    writer.put(static_cast<std::uint64_t>(side->x));
    writer.put(static_cast<std::uint64_t>(side->y));
  }
  return args;
}

CUresult copy2D(const CUDA_MEMCPY2D* p, std::optional<CUstream> stream) {
  if (p == nullptr) return CUDA_ERROR_INVALID_VALUE;
  const StreamWork work(stream.value_or(nullptr));
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  const auto src = sideOf(p->srcMemoryType, p->srcHost, p->srcDevice, p->srcArray, p->srcXInBytes, p->srcY, p->srcPitch);
  const auto dst = sideOf(p->dstMemoryType, p->dstHost, p->dstDevice, p->dstArray, p->dstXInBytes, p->dstY, p->dstPitch);
  if (!src || !dst) return CUDA_ERROR_NOT_SUPPORTED;
  const std::size_t width = p->WidthInBytes, height = p->Height;
  if (width == 0 || height == 0) return CUDA_SUCCESS;
  auto bad = [&](const Side& side) { return side.array == nullptr && ((height > 1 && side.pitch < width) || side.address == 0); };
  if (bad(*src) || bad(*dst)) return CUDA_ERROR_INVALID_VALUE;
  const Method method = stream ? Method::cuMemcpy2DAsync_v2 : Method::cuMemcpy2D_v2;
  if (!src->device && !dst->device) {
    if (stream) {
      if (CUresult error = cuStreamSynchronize(*stream); error != CUDA_SUCCESS) return error;
    }
    for (std::size_t row = 0; row < height; ++row) {
      std::memmove(reinterpret_cast<void*>(dst->address + row * dst->pitch),
                   reinterpret_cast<const void*>(src->address + row * src->pitch), width);
    }
    return CUDA_SUCCESS;
  }
  DriverCall call;
  if (src->device && dst->device) {
    return call.call(method, copyArgs(Direction::kOnDevice, *dst, *src, width, height, stream), {}, std::nullopt,
                     !stream).error;
  }
  const std::size_t chunk = call.session().maxPayloadBytes();
  if (chunk < width) return CUDA_ERROR_NOT_SUPPORTED;  // a row larger than one message
  const std::size_t rowsPerChunk = chunk / width;
  std::vector<std::byte> packed;
  for (std::size_t row = 0; row < height; row += rowsPerChunk) {
    const std::size_t rows = std::min(rowsPerChunk, height - row);
    Side from = *src, to = *dst;
    from.address += row * src->pitch;
    to.address += row * dst->pitch;
    from.y += row;  // array sides move down by rows
    to.y += row;
    if (dst->device) {  // host to device: pack the rows
      packed.resize(rows * width);
      for (std::size_t r = 0; r < rows; ++r) {
        std::memcpy(packed.data() + r * width, reinterpret_cast<const void*>(from.address + r * src->pitch), width);
      }
      auto outcome = call.call(method, copyArgs(Direction::kToDevice, to, from, width, rows, stream), packed,
                               std::nullopt, row == 0 && !stream);
      if (outcome.error != CUDA_SUCCESS) return outcome.error;
    } else {  // device to host: unpack the reply's rows
      auto outcome = call.call(method, copyArgs(Direction::kToHost, to, from, width, rows, stream), {}, std::nullopt,
                               row == 0 && !stream);
      if (outcome.error != CUDA_SUCCESS) return outcome.error;
      if (outcome.payload.size() != rows * width) return CUDA_ERROR_UNKNOWN;
      for (std::size_t r = 0; r < rows; ++r) {
        std::memcpy(reinterpret_cast<void*>(to.address + r * dst->pitch), outcome.payload.data() + r * width, width);
      }
    }
  }
  return CUDA_SUCCESS;
}

// A depth-1 3D copy as the 2D copy it is.
CUresult copy3D(const CUDA_MEMCPY3D* p, std::optional<CUstream> stream) {
  if (p == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (p->Depth > 1 || p->srcZ != 0 || p->dstZ != 0 || p->srcLOD != 0 || p->dstLOD != 0) return CUDA_ERROR_NOT_SUPPORTED;
  if (p->Depth == 0) return CUDA_SUCCESS;
  CUDA_MEMCPY2D flat{};
  flat.srcXInBytes = p->srcXInBytes;
  flat.srcY = p->srcY;
  flat.srcMemoryType = p->srcMemoryType;
  flat.srcHost = p->srcHost;
  flat.srcDevice = p->srcDevice;
  flat.srcArray = p->srcArray;
  flat.srcPitch = p->srcPitch;
  flat.dstXInBytes = p->dstXInBytes;
  flat.dstY = p->dstY;
  flat.dstMemoryType = p->dstMemoryType;
  flat.dstHost = p->dstHost;
  flat.dstDevice = p->dstDevice;
  flat.dstArray = p->dstArray;
  flat.dstPitch = p->dstPitch;
  flat.WidthInBytes = p->WidthInBytes;
  flat.Height = p->Height;
  return copy2D(&flat, stream);
}

}  // namespace
}  // namespace flyt::interpose::cu

using namespace flyt::interpose::cu;

FLYT_CU_EXPORT CUresult cuMemcpy2D_v2(const CUDA_MEMCPY2D* pCopy) { return copy2D(pCopy, std::nullopt); }
FLYT_CU_EXPORT CUresult cuMemcpy2D_v2_ptds(const CUDA_MEMCPY2D* pCopy) { return copy2D(pCopy, CU_STREAM_PER_THREAD); }
FLYT_CU_EXPORT CUresult cuMemcpy2DUnaligned_v2(const CUDA_MEMCPY2D* pCopy) { return copy2D(pCopy, std::nullopt); }
FLYT_CU_EXPORT CUresult cuMemcpy2DUnaligned_v2_ptds(const CUDA_MEMCPY2D* pCopy) {
  return copy2D(pCopy, CU_STREAM_PER_THREAD);
}
FLYT_CU_EXPORT CUresult cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D* pCopy, CUstream hStream) { return copy2D(pCopy, hStream); }
FLYT_CU_EXPORT CUresult cuMemcpy2DAsync_v2_ptsz(const CUDA_MEMCPY2D* pCopy, CUstream hStream) {
  return copy2D(pCopy, perThread(hStream));
}

FLYT_CU_EXPORT CUresult cuMemcpy3D_v2(const CUDA_MEMCPY3D* pCopy) { return copy3D(pCopy, std::nullopt); }
FLYT_CU_EXPORT CUresult cuMemcpy3D_v2_ptds(const CUDA_MEMCPY3D* pCopy) { return copy3D(pCopy, CU_STREAM_PER_THREAD); }
FLYT_CU_EXPORT CUresult cuMemcpy3DAsync_v2(const CUDA_MEMCPY3D* pCopy, CUstream hStream) { return copy3D(pCopy, hStream); }
FLYT_CU_EXPORT CUresult cuMemcpy3DAsync_v2_ptsz(const CUDA_MEMCPY3D* pCopy, CUstream hStream) {
  return copy3D(pCopy, perThread(hStream));
}
