// Virtual memory management: reservations, physical allocations, mappings and access (PyTorch's
// expandable segments). Every call is synchronous: each returns what the application builds on
// next (an address, a handle) or an error it must see. A mapping is recorded as a device range of
// the session in the process (pointer queries, unified-address copies), as an allocation is.
//
// Wire (backend/src/driver/serve_virtual_memory.cpp):
//   cuMemAddressReserve  {u64 size, u64 alignment, u64 hint, u64 flags} -> {u64 base}
//   cuMemAddressFree     {u64 base, u64 size}
//   cuMemCreate          {u64 size, u64 flags} + CUmemAllocationProp (inline) -> {u64 handle id}
//   cuMemRelease         {u64 handle id}
//   cuMemMap             {u64 base, u64 size, u64 offset, u64 handle id, u64 flags}
//   cuMemUnmap           {u64 base, u64 size}
//   cuMemSetAccess       {u64 base, u64 size, u64 count} + count CUmemAccessDesc (inline)
//   cuMemGetAllocationPropertiesFromHandle {u64 handle id} -> {CUmemAllocationProp}
// Sharing physical memory with another process (cuMemExportToShareableHandle and its import) is not
// served: the memory lives in the worker, which the other process cannot reach through a file
// descriptor of this one.
#include <cuda.h>

#include <span>
#include <vector>

#include "driver_client.hpp"
#include "driver_internal.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {
namespace {

template <class T>
std::span<const std::byte> bytesOf(const T* value, std::size_t count = 1) {
  return {reinterpret_cast<const std::byte*>(value), sizeof(T) * count};
}

CUresult simple(Method method, std::span<const std::byte> args, std::span<const std::byte> payload = {}) {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  DriverCall call;
  return call.call(method, args, payload).error;
}

}  // namespace
}  // namespace flyt::interpose::cu

using namespace flyt::interpose::cu;

FLYT_CU_EXPORT CUresult cuMemAddressReserve(CUdeviceptr* ptr, size_t size, size_t alignment, CUdeviceptr addr,
                                            unsigned long long flags) {
  if (ptr == nullptr || size == 0) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  DriverCall call;
  auto outcome = call.call(Method::cuMemAddressReserve, pack(size, alignment, addr, flags));
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  std::uint64_t base = 0;
  flyt::api::ArgReader reader(outcome.results);
  if (!reader.get(base) || base == 0) return CUDA_ERROR_UNKNOWN;
  *ptr = base;
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size) {
  return simple(Method::cuMemAddressFree, pack(ptr, size));
}

FLYT_CU_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle* handle, size_t size, const CUmemAllocationProp* prop,
                                    unsigned long long flags) {
  if (handle == nullptr || prop == nullptr || size == 0) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  DriverCall call;
  auto outcome = call.call(Method::cuMemCreate, pack(size, flags), bytesOf(prop));
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  std::uint64_t id = 0;
  flyt::api::ArgReader reader(outcome.results);
  if (!reader.get(id) || id == 0) return CUDA_ERROR_UNKNOWN;
  *handle = id;
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
  return simple(Method::cuMemRelease, pack(handle));
}

FLYT_CU_EXPORT CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                                 unsigned long long flags) {
  const CUresult error = simple(Method::cuMemMap, pack(ptr, size, offset, handle, flags));
  if (error == CUDA_SUCCESS) DriverState::get().mapped(ptr, size);
  return error;
}

FLYT_CU_EXPORT CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) {
  const CUresult error = simple(Method::cuMemUnmap, pack(ptr, size));
  if (error == CUDA_SUCCESS) DriverState::get().released(ptr);
  return error;
}

FLYT_CU_EXPORT CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc* desc, size_t count) {
  if (desc == nullptr || count == 0) return CUDA_ERROR_INVALID_VALUE;
  const CUresult error = simple(Method::cuMemSetAccess, pack(ptr, size, count), bytesOf(desc, count));
  // Small copies into a range are sent without waiting once it is read-write (copies.cpp); a grant
  // to another device than a copy's own leaves that copy's failure to the next synchronising call.
  bool readWrite = false;
  for (std::size_t i = 0; i < count; ++i) readWrite = readWrite || desc[i].flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  if (error == CUDA_SUCCESS) DriverState::get().accessSet(ptr, size, readWrite);
  return error;
}

FLYT_CU_EXPORT CUresult cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp* prop,
                                                               CUmemGenericAllocationHandle handle) {
  if (prop == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  DriverCall call;
  auto outcome = call.call(Method::cuMemGetAllocationPropertiesFromHandle, pack(handle));
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  flyt::api::ArgReader reader(outcome.results);
  if (!reader.get(*prop) || !reader.exhausted()) return CUDA_ERROR_UNKNOWN;
  return CUDA_SUCCESS;
}
