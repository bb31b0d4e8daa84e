// cudaMemcpy2D[_ptds] and cudaMemcpy2DAsync[_ptsz]: pitched copies through the session.
//
// Wire (methods cudaMemcpy2D and cudaMemcpy2DAsync, one layout; cudaMemcpy2D's stream is 0):
//   args {u64 dst, u64 dpitch, u64 src, u64 spitch, u64 width, u64 height, i32 kind, u64 stream}.
// The host side never travels as an address: its address is 0 and its pitch `width`, its rows are
// packed back to back in the call's inline payload (host-to-device) or the reply's (device-to-host);
// the client gathers them from, or scatters them into, the application's pitched host memory.
// Device-to-device copies are one call. A copy larger than one payload is split into blocks of
// whole rows, a row longer than one payload into one-row pieces of columns; the pieces go in order
// on the same stream, so the result is the same.
//
// Calls: cudaMemcpy2D: host-to-device pieces are batched but the last, which waits; device-to-host
// pieces wait. cudaMemcpy2DAsync: host-to-device and device-to-device are batched (the data
// captured at call time); device-to-host waits for the stream and fills `dst` before returning, a
// stronger order than CUDA's, as cudaMemcpyAsync's (memcpy.cpp).
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

struct Copy2D {
  std::byte* dst;
  std::size_t dpitch;
  const std::byte* src;
  std::size_t spitch;
  std::size_t width;
  std::size_t height;
  cudaMemcpyKind kind;
  cudaStream_t stream;
  bool async;  // cudaMemcpy2DAsync
};

// Part of a copy that fits one payload: `height` rows of `width` bytes from (row, column).
struct Piece {
  std::size_t row;
  std::size_t column;
  std::size_t width;
  std::size_t height;
};

std::vector<Piece> split(std::size_t width, std::size_t height, std::size_t limit) {
  std::vector<Piece> pieces;
  if (width <= limit) {
    const std::size_t rows = limit / width;
    for (std::size_t row = 0; row < height; row += rows) pieces.push_back({row, 0, width, std::min(rows, height - row)});
  } else {
    for (std::size_t row = 0; row < height; ++row) {
      for (std::size_t column = 0; column < width; column += limit) {
        pieces.push_back({row, column, std::min(limit, width - column), 1});
      }
    }
  }
  return pieces;
}

std::uint64_t address(const void* pointer) { return reinterpret_cast<std::uintptr_t>(pointer); }

std::vector<std::byte> args2D(std::uint64_t dst, std::size_t dpitch, std::uint64_t src, std::size_t spitch,
                              std::size_t width, std::size_t height, const Copy2D& copy) {
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  for (std::uint64_t value : {dst, std::uint64_t{dpitch}, src, std::uint64_t{spitch}, std::uint64_t{width},
                              std::uint64_t{height}}) {
    writer.put(value);
  }
  writer.put(static_cast<std::int32_t>(copy.kind));
  writer.put(address(copy.async ? copy.stream : nullptr));
  return args;
}

api::Method methodOf(const Copy2D& copy) {
  return copy.async ? api::Method::cudaMemcpy2DAsync : api::Method::cudaMemcpy2D;
}

cudaError_t toDevice(const Copy2D& copy, std::size_t limit) {
  auto& client = Client::get();
  const auto pieces = split(copy.width, copy.height, limit);
  std::vector<std::byte> packed;
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    const Piece& piece = pieces[i];
    packed.resize(piece.width * piece.height);
    for (std::size_t r = 0; r < piece.height; ++r) {
      std::memcpy(packed.data() + r * piece.width, copy.src + (piece.row + r) * copy.spitch + piece.column,
                  piece.width);
    }
    const auto args = args2D(address(copy.dst + piece.row * copy.dpitch + piece.column), copy.dpitch, 0,
                             piece.width, piece.width, piece.height, copy);
    if (!copy.async && i + 1 == pieces.size()) return client.call(methodOf(copy), args, packed).error;
    if (auto queued = client.enqueue(methodOf(copy), args, packed); queued != cudaSuccess) return queued;
  }
  return cudaSuccess;
}

cudaError_t toHost(const Copy2D& copy, std::size_t limit) {
  auto& client = Client::get();
  for (const Piece& piece : split(copy.width, copy.height, limit)) {
    const auto args = args2D(0, piece.width, address(copy.src + piece.row * copy.spitch + piece.column),
                             copy.spitch, piece.width, piece.height, copy);
    auto outcome = client.call(methodOf(copy), args);
    if (outcome.error != cudaSuccess) return outcome.error;
    if (outcome.payload.size() != piece.width * piece.height) return cudaErrorUnknown;
    for (std::size_t r = 0; r < piece.height; ++r) {
      std::memcpy(copy.dst + (piece.row + r) * copy.dpitch + piece.column,
                  outcome.payload.data() + r * piece.width, piece.width);
    }
  }
  return cudaSuccess;
}

cudaError_t onDevice(const Copy2D& copy) {
  const auto args = args2D(address(copy.dst), copy.dpitch, address(copy.src), copy.spitch, copy.width,
                           copy.height, copy);
  auto& client = Client::get();
  return copy.async ? client.enqueue(methodOf(copy), args) : client.call(methodOf(copy), args).error;
}

cudaError_t onHost(const Copy2D& copy) {
  if (copy.async) {
    if (auto drained = ::cudaStreamSynchronize(copy.stream); drained != cudaSuccess) return drained;
  }
  for (std::size_t r = 0; r < copy.height; ++r) {
    std::memmove(copy.dst + r * copy.dpitch, copy.src + r * copy.spitch, copy.width);
  }
  return cudaSuccess;
}

cudaError_t copy2D(const Copy2D& copy) {
  if (copy.width == 0 || copy.height == 0) return cudaSuccess;
  if (copy.dst == nullptr || copy.src == nullptr) return cudaErrorInvalidValue;
  if (copy.dpitch < copy.width || copy.spitch < copy.width) return cudaErrorInvalidPitchValue;
  const std::size_t limit = std::max<std::size_t>(Client::get().maxPayloadBytes(), 8192) - 4096;
  switch (copy.kind) {
    case cudaMemcpyHostToHost: return onHost(copy);
    case cudaMemcpyHostToDevice: return toDevice(copy, limit);
    case cudaMemcpyDeviceToHost: return toHost(copy, limit);
    case cudaMemcpyDeviceToDevice: return onDevice(copy);
    case cudaMemcpyDefault:
      flyt::logger("interpose").warn("{} with cudaMemcpyDefault is not supported yet",
                                     copy.async ? "cudaMemcpy2DAsync" : "cudaMemcpy2D");
      return cudaErrorNotSupported;
  }
  return cudaErrorInvalidMemcpyDirection;
}

}  // namespace
}  // namespace flyt::interpose

FLYT_CUDART_EXPORT cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch,
                                            size_t width, size_t height, enum cudaMemcpyKind kind) {
  using namespace flyt::interpose;
  return recordResult(copy2D({static_cast<std::byte*>(dst), dpitch, static_cast<const std::byte*>(src),
                              spitch, width, height, kind, nullptr, false}));
}

// A synchronous copy is ordered the same way under both default streams.
FLYT_CUDART_EXPORT cudaError_t cudaMemcpy2D_ptds(void* dst, size_t dpitch, const void* src, size_t spitch,
                                                 size_t width, size_t height, enum cudaMemcpyKind kind) {
  return cudaMemcpy2D(dst, dpitch, src, spitch, width, height, kind);
}

FLYT_CUDART_EXPORT cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch,
                                                 size_t width, size_t height, enum cudaMemcpyKind kind,
                                                 cudaStream_t stream) {
  using namespace flyt::interpose;
  return recordResult(copy2D({static_cast<std::byte*>(dst), dpitch, static_cast<const std::byte*>(src),
                              spitch, width, height, kind, stream, true}));
}

// Under --default-stream per-thread, stream 0 means the calling thread's default stream.
FLYT_CUDART_EXPORT cudaError_t cudaMemcpy2DAsync_ptsz(void* dst, size_t dpitch, const void* src,
                                                      size_t spitch, size_t width, size_t height,
                                                      enum cudaMemcpyKind kind, cudaStream_t stream) {
  return cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, kind,
                           stream == nullptr ? cudaStreamPerThread : stream);
}
