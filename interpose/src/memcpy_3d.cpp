// cudaMemcpy3D[_ptds] and cudaMemcpy3DAsync[_ptsz] between pitched pointers (no cudaArray: refused
// with cudaErrorNotSupported). A 3D copy is a series of 2D copies through memcpy_2d.cpp's calls
// (its wire, its packing of host rows, its ordering): one per slice, or one for the whole box when
// both sides' slices are `extent.height` rows tall, so that the slices are back to back. The
// pieces go in order on the same stream, so the result is the same as one copy.
//
// For pitched pointers `extent.width` and the positions' x are bytes; the byte at (x, y, z) of a
// side is ptr + (z * ysize + y) * pitch + x.
#include <cuda_runtime_api.h>

#include <cstddef>

#include "client.hpp"
#include "flyt/transport/log.hpp"

#define FLYT_CUDART_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose {
namespace {

// The first byte of a side's box, after checking that its rows fit its pitch and slices its ysize.
cudaError_t corner(const cudaPitchedPtr& side, const cudaPos& pos, const cudaExtent& extent, std::byte** first) {
  if (side.ptr == nullptr) return cudaErrorInvalidValue;
  if (side.pitch < extent.width || pos.x > side.pitch - extent.width) return cudaErrorInvalidPitchValue;
  if (extent.depth > 1 && (side.ysize < extent.height || pos.y > side.ysize - extent.height)) {
    return cudaErrorInvalidValue;
  }
  *first = static_cast<std::byte*>(side.ptr) + (pos.z * side.ysize + pos.y) * side.pitch + pos.x;
  return cudaSuccess;
}

cudaError_t copy3D(const cudaMemcpy3DParms* p, cudaStream_t stream, bool async) {
  if (p == nullptr) return cudaErrorInvalidValue;
  if (p->srcArray != nullptr || p->dstArray != nullptr) {
    flyt::logger("interpose").warn("{} with a cudaArray operand is not supported",
                                   async ? "cudaMemcpy3DAsync" : "cudaMemcpy3D");
    return cudaErrorNotSupported;
  }
  const cudaExtent& e = p->extent;
  if (e.width == 0 || e.height == 0 || e.depth == 0) return cudaSuccess;
  std::byte* dst = nullptr;
  std::byte* src = nullptr;
  if (auto checked = corner(p->dstPtr, p->dstPos, e, &dst); checked != cudaSuccess) return checked;
  if (auto checked = corner(p->srcPtr, p->srcPos, e, &src); checked != cudaSuccess) return checked;
  const auto copy = [&](std::byte* to, const std::byte* from, std::size_t rows) {
    return async ? ::cudaMemcpy2DAsync(to, p->dstPtr.pitch, from, p->srcPtr.pitch, e.width, rows, p->kind, stream)
                 : ::cudaMemcpy2D(to, p->dstPtr.pitch, from, p->srcPtr.pitch, e.width, rows, p->kind);
  };
  if (e.depth == 1 || (p->dstPtr.ysize == e.height && p->srcPtr.ysize == e.height)) {
    return copy(dst, src, e.height * e.depth);
  }
  for (std::size_t z = 0; z < e.depth; ++z) {
    const cudaError_t slice = copy(dst + z * p->dstPtr.ysize * p->dstPtr.pitch,
                                   src + z * p->srcPtr.ysize * p->srcPtr.pitch, e.height);
    if (slice != cudaSuccess) return slice;
  }
  return cudaSuccess;
}

}  // namespace
}  // namespace flyt::interpose

FLYT_CUDART_EXPORT cudaError_t cudaMemcpy3D(const struct cudaMemcpy3DParms* p) {
  return flyt::interpose::recordResult(flyt::interpose::copy3D(p, nullptr, false));
}

// A synchronous copy is ordered the same way under both default streams.
FLYT_CUDART_EXPORT cudaError_t cudaMemcpy3D_ptds(const struct cudaMemcpy3DParms* p) { return cudaMemcpy3D(p); }

FLYT_CUDART_EXPORT cudaError_t cudaMemcpy3DAsync(const struct cudaMemcpy3DParms* p, cudaStream_t stream) {
  return flyt::interpose::recordResult(flyt::interpose::copy3D(p, stream, true));
}

// Under --default-stream per-thread, stream 0 means the calling thread's default stream.
FLYT_CUDART_EXPORT cudaError_t cudaMemcpy3DAsync_ptsz(const struct cudaMemcpy3DParms* p, cudaStream_t stream) {
  return cudaMemcpy3DAsync(p, stream == nullptr ? cudaStreamPerThread : stream);
}
