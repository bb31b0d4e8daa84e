// Host/device copies and memory queries (interpose/driver/copies.cpp is the other side).
//
// Host-to-device bytes arrive inline with the call, or lie in the session's data region (a staging
// slot, or the application's pinned memory); device-to-host bytes go back inline with the reply or
// land in the region. An asynchronous copy waits for its stream before the handler returns unless
// its host side is the application's pinned memory, which outlives the call (one DMA, not waited
// for: CUDA's own semantics).
#include <cstring>
#include <tuple>

#include "handlers.hpp"

namespace flyt::backend::cu {
namespace {

struct CopyArgs {
  CUdeviceptr device = 0;
  std::uint64_t bytes = 0;
  CUstream stream{};  // the real stream (async only)
};

std::optional<Outcome> readCopy(ServeContext& c, CallInput in, const char* function, bool async, CopyArgs& copy) {
  CUstream stream{};
  if (!in.args.get(copy.device) || !in.args.get(copy.bytes) || (async && !in.args.get(stream)) || !in.args.exhausted()) {
    return c.malformed(fmt::format("{}: bad arguments", function));
  }
  if (async) {
    if (auto refused = c.handles().use(function, "hStream", stream, {HandleKind::stream}, &copy.stream)) return refused;
  }
  return c.deviceRange(function, "device", copy.device, copy.bytes);
}

}  // namespace

// Inline bytes from this size on are copied into page-locked memory before the copy (ServeContext::
// copyBounce). Measured on an H100 host (driver 580): a pageable 4 KiB copy took 7.0 µs, a pinned
// one 8.0; at 64 KiB 17.8 against 9.8 µs.
constexpr std::size_t kBounceMinBytes = 16 << 10;

Outcome serveCopyToDevice(ServeContext& c, CallInput in, bool async) {
  const char* function = async ? "cuMemcpyHtoDAsync_v2" : "cuMemcpyHtoD_v2";
  CopyArgs copy;
  if (auto refused = readCopy(c, in, function, async, copy)) return *refused;
  if (in.bulk.size() != copy.bytes) {
    return c.malformed(fmt::format("{}: {} payload bytes for a {}-byte copy", function, in.bulk.size(), copy.bytes));
  }
  const std::byte* source = in.bulk.data();
  if (in.region.empty() && c.copyBounce != nullptr && copy.bytes >= kBounceMinBytes) {
    if (auto bounce = c.copyBounce->get(copy.bytes); bounce.size() == copy.bytes) {
      std::memcpy(bounce.data(), source, copy.bytes);
      source = bounce.data();
    }
  }
  Outcome out;
  if (!async) {
    out.error = c.driver().cuMemcpyHtoD_v2(copy.device, source, copy.bytes);
    return out;
  }
  out.error = c.driver().cuMemcpyHtoDAsync_v2(copy.device, source, copy.bytes, copy.stream);
  // Inline bytes and staging slots are gone once the call is answered; pinned memory stays.
  if (out.error == CUDA_SUCCESS && !in.persists) out.error = c.driver().cuStreamSynchronize(copy.stream);
  return out;
}

Outcome serveCopyToHost(ServeContext& c, CallInput in, bool async) {
  const char* function = async ? "cuMemcpyDtoHAsync_v2" : "cuMemcpyDtoH_v2";
  CopyArgs copy;
  if (auto refused = readCopy(c, in, function, async, copy)) return *refused;
  std::span<std::byte> target;
  Outcome out;
  if (!in.bulk.empty() || !in.region.empty()) {
    // Into the data region: a staging slot or the application's pinned memory.
    if (in.region.size() != copy.bytes) {
      return c.malformed(fmt::format("{}: a {}-byte destination for a {}-byte copy", function, in.region.size(), copy.bytes));
    }
    target = in.region;
  } else {
    if (copy.bytes > c.maxReplyPayload) {
      return c.malformed(fmt::format("{}: {} bytes exceed one reply's {}", function, copy.bytes, c.maxReplyPayload));
    }
    // Returned inline: from the page-locked reply buffer (one DMA, no zero-filling), which stays
    // untouched until this reply has been sent.
    if (c.replyStaging != nullptr) target = c.replyStaging->get(copy.bytes);
    if (target.size() != copy.bytes) {
      out.payload.resize(copy.bytes);
      target = out.payload;
    } else {
      out.payloadView = target;
    }
  }
  if (!async) {
    out.error = c.driver().cuMemcpyDtoH_v2(target.data(), copy.device, copy.bytes);
  } else {
    out.error = c.driver().cuMemcpyDtoHAsync_v2(target.data(), copy.device, copy.bytes, copy.stream);
    // The bytes must have landed before the reply (inline, or a slot the client drains then);
    // pinned memory is the application's to wait for, as CUDA's asynchronous copies are.
    if (out.error == CUDA_SUCCESS && !in.persists) out.error = c.driver().cuStreamSynchronize(copy.stream);
  }
  if (out.error != CUDA_SUCCESS) {
    out.payload.clear();
    out.payloadView = {};
  }
  return out;
}

// 2D copies (interpose/driver/copies_2d.cpp): the host side is packed rows, inline; each device
// side must lie inside the session's memory, from its first byte to its last row's end; an array
// side must be the session's array (the driver checks its bounds).
Outcome serveCopy2D(ServeContext& c, CallInput in, bool async) {
  const char* function = async ? "cuMemcpy2DAsync_v2" : "cuMemcpy2D_v2";
  std::uint8_t direction = 0;
  std::uint64_t dst = 0, dstPitch = 0, src = 0, srcPitch = 0, width = 0, height = 0;
  CUstream stream{};
  std::uint8_t arrays = 0;
  if (!in.args.get(direction) || !in.args.get(dst) || !in.args.get(dstPitch) || !in.args.get(src) ||
      !in.args.get(srcPitch) || !in.args.get(width) || !in.args.get(height) || (async && !in.args.get(stream)) ||
      !in.args.get(arrays) || arrays > 3 || direction < 1 || direction > 3 || width == 0 || height == 0) {
    return c.malformed(fmt::format("{}: bad arguments", function));
  }
  struct ArraySide {
    CUarray array{};
    std::uint64_t x = 0, y = 0;
  } dstArray, srcArray;
  for (auto [bit, side, name] : {std::tuple{1, &dstArray, "dstArray"}, std::tuple{2, &srcArray, "srcArray"}}) {
    if ((arrays & bit) == 0) continue;
    CUarray id{};
    if (!in.args.get(id) || !in.args.get(side->x) || !in.args.get(side->y)) return c.malformed(fmt::format("{}: bad array side", function));
    if (auto refused = c.handles().use(function, name, id, {HandleKind::array}, &side->array)) return *refused;
    if (side->array == nullptr) return c.malformed(fmt::format("{}: a null array", function));
  }
  if (!in.args.exhausted()) return c.malformed(fmt::format("{}: trailing arguments", function));
  if (((arrays & 1) != 0 && direction == 2) || ((arrays & 2) != 0 && direction == 1)) {
    return c.malformed(fmt::format("{}: an array side on the host", function));
  }
  CUstream realStream{};
  if (async) {
    if (auto refused = c.handles().use(function, "hStream", stream, {HandleKind::stream}, &realStream)) return *refused;
  }
  const bool toDevice = direction != 2, fromDevice = direction != 1;
  auto extent = [&](std::uint64_t pitch) { return api::satAdd(api::satMul(pitch, height - 1), width); };
  // An array side has no pitch (the client sends 0): the driver checks its bounds.
  if (toDevice && dstArray.array == nullptr) {
    if (height > 1 && dstPitch < width) return c.malformed(fmt::format("{}: pitch below width", function));
    if (auto refused = c.deviceRange(function, "dst", dst, extent(dstPitch))) return *refused;
  }
  if (fromDevice && srcArray.array == nullptr) {
    if (height > 1 && srcPitch < width) return c.malformed(fmt::format("{}: pitch below width", function));
    if (auto refused = c.deviceRange(function, "src", src, extent(srcPitch))) return *refused;
  }
  const std::uint64_t packed = api::satMul(width, height);
  CUDA_MEMCPY2D copy{};
  copy.WidthInBytes = width;
  copy.Height = height;
  Outcome out;
  if (dstArray.array != nullptr) {
    copy.dstMemoryType = CU_MEMORYTYPE_ARRAY;
    copy.dstArray = dstArray.array;
    copy.dstXInBytes = dstArray.x;
    copy.dstY = dstArray.y;
  } else if (toDevice) {
    copy.dstMemoryType = CU_MEMORYTYPE_DEVICE;
    copy.dstDevice = dst;
    copy.dstPitch = dstPitch;
  } else {
    if (packed > c.maxReplyPayload) return c.malformed(fmt::format("{}: {} bytes exceed one reply", function, packed));
    out.payload.resize(packed);
    copy.dstMemoryType = CU_MEMORYTYPE_HOST;
    copy.dstHost = out.payload.data();
    copy.dstPitch = width;
  }
  if (srcArray.array != nullptr) {
    copy.srcMemoryType = CU_MEMORYTYPE_ARRAY;
    copy.srcArray = srcArray.array;
    copy.srcXInBytes = srcArray.x;
    copy.srcY = srcArray.y;
  } else if (fromDevice) {
    copy.srcMemoryType = CU_MEMORYTYPE_DEVICE;
    copy.srcDevice = src;
    copy.srcPitch = srcPitch;
  } else {
    if (in.bulk.size() != packed) return c.malformed(fmt::format("{}: {} payload bytes for {} rows of {}", function, in.bulk.size(), height, width));
    copy.srcMemoryType = CU_MEMORYTYPE_HOST;
    copy.srcHost = in.bulk.data();
    copy.srcPitch = width;
  }
  if (!async) {
    out.error = c.driver().cuMemcpy2D_v2(&copy);
  } else {
    out.error = c.driver().cuMemcpy2DAsync_v2(&copy, realStream);
    // Host bytes live only as long as this message (or this reply's buffer): wait for them.
    if (out.error == CUDA_SUCCESS && direction != 3) out.error = c.driver().cuStreamSynchronize(realStream);
  }
  if (out.error != CUDA_SUCCESS) out.payload.clear();
  return out;
}

// With a quota: total is the quota, free what is left of it (at most what the GPU has free).
Outcome serveMemGetInfo(ServeContext& c, CallInput in) {
  if (!in.args.exhausted()) return c.malformed("cuMemGetInfo_v2: trailing arguments");
  std::size_t free = 0, total = 0;
  Outcome out;
  if ((out.error = c.driver().cuMemGetInfo_v2(&free, &total)) != CUDA_SUCCESS) return out;
  if (c.quota().limited()) {
    total = c.quota().limit();
    free = std::min<std::uint64_t>(free, c.quota().remaining());
  }
  api::ArgWriter writer(out.results);
  writer.put(free);
  writer.put(total);
  return out;
}

// Charged as pitch * height: the unpadded size before the call, the padding after it (an
// allocation whose padding does not fit is freed again and refused).
Outcome serveAllocPitch(ServeContext& c, CallInput in) {
  std::size_t width = 0, height = 0;
  unsigned elementBytes = 0;
  if (!in.args.get(width) || !in.args.get(height) || !in.args.get(elementBytes) || !in.args.exhausted()) {
    return c.malformed("cuMemAllocPitch_v2: bad arguments");
  }
  const std::uint64_t unpadded = api::satMul(width, height);
  if (auto refused = c.reserve("cuMemAllocPitch_v2", unpadded)) return *refused;
  Outcome out;
  CUdeviceptr pointer = 0;
  std::size_t pitch = 0;
  out.error = c.driver().cuMemAllocPitch_v2(&pointer, &pitch, width, height, elementBytes);
  if (out.error != CUDA_SUCCESS) {
    c.unreserve(unpadded);
    return out;
  }
  const std::uint64_t padded = api::satMul(pitch, height);
  if (padded > unpadded) {
    if (auto refused = c.reserve("cuMemAllocPitch_v2", padded - unpadded)) {
      (void)c.driver().cuMemFree_v2(pointer);
      c.unreserve(unpadded);
      return *refused;
    }
  }
  c.allocated(pointer, padded);
  api::ArgWriter writer(out.results);
  writer.put(pointer);
  writer.put(pitch);
  return out;
}

// Memory pool attributes (interpose/driver/memory_pools.cpp): the pool is the session's (or a
// device's pool the session asked for); the value's C type follows the attribute.
namespace {
bool isIntPoolAttribute(CUmemPool_attribute attr) {
  return attr == CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES || attr == CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC ||
         attr == CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES;
}
}  // namespace

Outcome servePoolAttribute(ServeContext& c, CallInput in, bool set) {
  const char* name = set ? "cuMemPoolSetAttribute" : "cuMemPoolGetAttribute";
  CUmemoryPool id{}, pool{};
  std::int32_t attribute = 0;
  std::uint64_t value = 0;
  if (!in.args.get(id) || !in.args.get(attribute) || (set && !in.args.get(value)) || !in.args.exhausted()) {
    return c.malformed(fmt::format("{}: bad arguments", name));
  }
  if (auto refused = c.handles().use(name, "pool", id, {HandleKind::memoryPool}, &pool)) return *refused;
  const auto attr = static_cast<CUmemPool_attribute>(attribute);
  auto fn = set ? c.driver().cuMemPoolSetAttribute : c.driver().cuMemPoolGetAttribute;
  if (fn == nullptr) return c.unsupported(name);
  Outcome out;
  int small = static_cast<int>(value);
  cuuint64_t large = value;
  void* slot = isIntPoolAttribute(attr) ? static_cast<void*>(&small) : static_cast<void*>(&large);
  out.error = fn(pool, attr, slot);
  if (out.error == CUDA_SUCCESS && !set) {
    api::ArgWriter(out.results).put(isIntPoolAttribute(attr) ? static_cast<std::uint64_t>(small) : large);
  }
  return out;
}

}  // namespace flyt::backend::cu
