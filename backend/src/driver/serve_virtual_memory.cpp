// Virtual memory management (cuMemAddressReserve, cuMemCreate, cuMemMap, cuMemSetAccess, ...;
// interpose/driver/virtual_memory.cpp is the other side, with the wire formats).
//
// The worker keeps what the driver keeps, so that every call is checked before the driver sees it:
// reservations are address space only (not charged, not usable); physical allocations are charged
// to the quota when created and given back when released; a mapping must lie inside one
// reservation, not overlap another mapping and fit its physical allocation, and from then on its
// range passes the session's range checks (copies, memsets, kernels' pointer queries) like an
// allocation; it may be unmapped only whole, a reservation freed only whole and empty, a physical
// allocation released only when nothing maps it.
#include <cstring>

#include "handlers.hpp"

namespace flyt::backend::cu {
namespace {

const void* pointer(CUdeviceptr address) { return reinterpret_cast<const void*>(static_cast<std::uintptr_t>(address)); }

Outcome refused(CUresult error, std::string detail) {
  Outcome out;
  out.error = error;
  out.detail = std::move(detail);
  return out;
}

// The locations of a property or access descriptor name devices of the session.
std::optional<Outcome> checkLocation(ServeContext& c, const char* function, const CUmemLocation& location) {
  if (location.type != CU_MEM_LOCATION_TYPE_DEVICE) {
    return refused(CUDA_ERROR_NOT_SUPPORTED, fmt::format("{}: only device memory locations are served", function));
  }
  const CUdevice device = location.id;
  return c.deviceOrdinal(function, "location.id", &device);
}

}  // namespace

Outcome serveAddressReserve(ServeContext& c, CallInput in) {
  if (c.driver().cuMemAddressReserve == nullptr) return c.unsupported("cuMemAddressReserve");
  std::uint64_t size = 0, alignment = 0, hint = 0, flags = 0;
  if (!in.args.get(size) || !in.args.get(alignment) || !in.args.get(hint) || !in.args.get(flags) || !in.args.exhausted()) {
    return c.malformed("cuMemAddressReserve: bad arguments");
  }
  Outcome out;
  CUdeviceptr base = 0;
  out.error = c.driver().cuMemAddressReserve(&base, size, alignment, hint, flags);
  if (out.error != CUDA_SUCCESS) return out;
  c.reservations.add(pointer(base), size);
  api::ArgWriter(out.results).put(static_cast<std::uint64_t>(base));
  return out;
}

Outcome serveAddressFree(ServeContext& c, CallInput in) {
  if (c.driver().cuMemAddressFree == nullptr) return c.unsupported("cuMemAddressFree");
  std::uint64_t base = 0, size = 0;
  if (!in.args.get(base) || !in.args.get(size) || !in.args.exhausted()) return c.malformed("cuMemAddressFree: bad arguments");
  if (c.reservations.sizeAt(pointer(base)) != size || size == 0) {
    return c.malformed(fmt::format("cuMemAddressFree: [{:#x}, +{}) is not a reservation of this session", base, size));
  }
  if (c.anyMappingIn(base, size)) {
    return refused(CUDA_ERROR_INVALID_VALUE, fmt::format("cuMemAddressFree: [{:#x}, +{}) is still mapped", base, size));
  }
  Outcome out;
  out.error = c.driver().cuMemAddressFree(base, size);
  if (out.error == CUDA_SUCCESS) c.reservations.remove(pointer(base));
  return out;
}

Outcome serveMemCreate(ServeContext& c, CallInput in) {
  if (c.driver().cuMemCreate == nullptr) return c.unsupported("cuMemCreate");
  std::uint64_t size = 0, flags = 0;
  if (!in.args.get(size) || !in.args.get(flags) || !in.args.exhausted() || in.bulk.size() != sizeof(CUmemAllocationProp)) {
    return c.malformed("cuMemCreate: bad arguments");
  }
  CUmemAllocationProp prop{};
  std::memcpy(&prop, in.bulk.data(), sizeof prop);
  if (auto bad = checkLocation(c, "cuMemCreate", prop.location)) return *bad;
  if (auto over = c.reserve("cuMemCreate", size)) return *over;
  Outcome out;
  CUmemGenericAllocationHandle real = 0;
  out.error = c.driver().cuMemCreate(&real, size, &prop, flags);
  if (out.error != CUDA_SUCCESS) {
    c.unreserve(size);
    return out;
  }
  const auto id = c.handles().create(HandleKind::memoryHandle, real);
  c.physical[id] = ServeContext::Physical{real, size, 0};
  api::ArgWriter(out.results).put(static_cast<std::uint64_t>(id));
  return out;
}

Outcome serveMemRelease(ServeContext& c, CallInput in) {
  if (c.driver().cuMemRelease == nullptr) return c.unsupported("cuMemRelease");
  CUmemGenericAllocationHandle id = 0;
  if (!in.args.get(id) || !in.args.exhausted()) return c.malformed("cuMemRelease: bad arguments");
  CUmemGenericAllocationHandle real = 0;
  if (auto bad = c.handles().use("cuMemRelease", "handle", id, {HandleKind::memoryHandle}, &real)) return *bad;
  auto it = c.physical.find(id);
  if (it == c.physical.end()) return c.malformed("cuMemRelease: handle has no allocation");
  // The driver would keep the memory until it is unmapped; the session's bookkeeping asks for the
  // order CUDA documents, so that the quota never counts memory that is gone or misses memory in use.
  if (it->second.mappings != 0) {
    return refused(CUDA_ERROR_INVALID_VALUE,
                   fmt::format("cuMemRelease: handle {:#x} is still mapped {} time(s); unmap it first", id,
                               it->second.mappings));
  }
  Outcome out;
  out.error = c.driver().cuMemRelease(real);
  if (out.error != CUDA_SUCCESS) return out;
  c.unreserve(it->second.bytes);
  c.physical.erase(it);
  c.handles().destroy(id);
  return out;
}

Outcome serveMemMap(ServeContext& c, CallInput in) {
  if (c.driver().cuMemMap == nullptr) return c.unsupported("cuMemMap");
  std::uint64_t base = 0, size = 0, offset = 0, flags = 0;
  CUmemGenericAllocationHandle id = 0;
  if (!in.args.get(base) || !in.args.get(size) || !in.args.get(offset) || !in.args.get(id) || !in.args.get(flags) ||
      !in.args.exhausted()) {
    return c.malformed("cuMemMap: bad arguments");
  }
  CUmemGenericAllocationHandle real = 0;
  if (auto bad = c.handles().use("cuMemMap", "handle", id, {HandleKind::memoryHandle}, &real)) return *bad;
  auto found = c.physical.find(id);
  if (found == c.physical.end()) return c.malformed("cuMemMap: handle has no allocation");
  auto& physical = found->second;
  if (size == 0 || offset > physical.bytes || size > physical.bytes - offset) {
    return c.malformed(fmt::format("cuMemMap: {} bytes at offset {} of an allocation of {}", size, offset, physical.bytes));
  }
  if (!c.reservations.contains(pointer(base), size)) {
    return c.malformed(fmt::format("cuMemMap: [{:#x}, +{}) lies outside this session's reservations", base, size));
  }
  if (c.anyMappingIn(base, size)) {
    return refused(CUDA_ERROR_INVALID_VALUE, fmt::format("cuMemMap: [{:#x}, +{}) is mapped already", base, size));
  }
  Outcome out;
  out.error = c.driver().cuMemMap(base, size, offset, real, flags);
  if (out.error != CUDA_SUCCESS) return out;
  c.addMapping(base, size);
  c.mappingHandle[base] = id;
  ++physical.mappings;
  return out;
}

Outcome serveMemUnmap(ServeContext& c, CallInput in) {
  if (c.driver().cuMemUnmap == nullptr) return c.unsupported("cuMemUnmap");
  std::uint64_t base = 0, size = 0;
  if (!in.args.get(base) || !in.args.get(size) || !in.args.exhausted()) return c.malformed("cuMemUnmap: bad arguments");
  auto handle = c.mappingHandle.find(base);
  if (handle == c.mappingHandle.end() || c.mappingSize(base) != size) {
    return c.malformed(fmt::format("cuMemUnmap: [{:#x}, +{}) is not a whole mapping of this session", base, size));
  }
  Outcome out;
  out.error = c.driver().cuMemUnmap(base, size);
  if (out.error != CUDA_SUCCESS) return out;
  c.removeMapping(base);
  if (auto it = c.physical.find(handle->second); it != c.physical.end() && it->second.mappings > 0) --it->second.mappings;
  c.mappingHandle.erase(handle);
  return out;
}

Outcome serveSetAccess(ServeContext& c, CallInput in) {
  if (c.driver().cuMemSetAccess == nullptr) return c.unsupported("cuMemSetAccess");
  std::uint64_t base = 0, size = 0, count = 0;
  if (!in.args.get(base) || !in.args.get(size) || !in.args.get(count) || !in.args.exhausted() || count == 0 ||
      count > 64 || in.bulk.size() != count * sizeof(CUmemAccessDesc)) {
    return c.malformed("cuMemSetAccess: bad arguments");
  }
  if (!c.reservations.contains(pointer(base), size)) {
    return c.malformed(fmt::format("cuMemSetAccess: [{:#x}, +{}) lies outside this session's reservations", base, size));
  }
  std::vector<CUmemAccessDesc> descs(count);
  std::memcpy(descs.data(), in.bulk.data(), in.bulk.size());
  for (const auto& desc : descs) {
    if (auto bad = checkLocation(c, "cuMemSetAccess", desc.location)) return *bad;
  }
  Outcome out;
  out.error = c.driver().cuMemSetAccess(base, size, descs.data(), count);
  return out;
}

Outcome serveAllocationProperties(ServeContext& c, CallInput in) {
  if (c.driver().cuMemGetAllocationPropertiesFromHandle == nullptr) return c.unsupported("cuMemGetAllocationPropertiesFromHandle");
  CUmemGenericAllocationHandle id = 0;
  if (!in.args.get(id) || !in.args.exhausted()) return c.malformed("cuMemGetAllocationPropertiesFromHandle: bad arguments");
  CUmemGenericAllocationHandle real = 0;
  if (auto bad = c.handles().use("cuMemGetAllocationPropertiesFromHandle", "handle", id, {HandleKind::memoryHandle}, &real)) {
    return *bad;
  }
  Outcome out;
  CUmemAllocationProp prop{};
  out.error = c.driver().cuMemGetAllocationPropertiesFromHandle(&prop, real);
  if (out.error == CUDA_SUCCESS) api::ArgWriter(out.results).put(prop);
  return out;
}

}  // namespace flyt::backend::cu
