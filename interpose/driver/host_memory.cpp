// Page-locked host memory and pointer queries, answered in the application's process.
//
// cuMemAllocHost and cuMemHostAlloc carve page-locked memory from the session's data region (shared
// memory the worker registered with the GPU: copies from and to it are single DMAs, copies.cpp).
// Where the session has no region (TCP) or it is exhausted, they return page-aligned memory of the
// application's: valid everywhere the driver's would be for copies, which then travel as pageable
// ones. cuMemHostGetDevicePointer answers for memory of the region: the worker asks its driver for
// the device address of its mapping of the segment (flytRegionDevicePointer, once per segment),
// which is the application's own address where the worker could map the segment there, as the
// driver's answer is under unified addressing (transport/segment.hpp). Kernels then read and write
// the application's memory directly. Memory outside the region (a TCP session, an exhausted region,
// cuMemHostRegister'd pageable memory) is out of the GPU's reach: CUDA_ERROR_NOT_SUPPORTED, logged.
// cuMemHostRegister and cuMemHostUnregister record the range and succeed (the memory stays pageable).
//
// Pointer attributes come from the session's allocation records (driver_client.hpp) and these.
#include <cuda.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <map>
#include <mutex>
#include <vector>

#include "driver_client.hpp"
#include "flyt/transport/log.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {
namespace {

struct HostRange {
  std::size_t bytes;
  unsigned flags;
  bool owned;  // allocated here (cuMemFreeHost frees it), or registered
};

struct HostMemory {
  std::mutex mutex;
  std::map<const void*, HostRange> ranges;
  std::map<std::uint32_t, CUdeviceptr> segmentDevice;  // region segment -> device address of its first byte
};
HostMemory& hostMemory() noexcept {
  static auto* const state = new HostMemory;  // leaked: freed memory may be asked about during exit
  return *state;
}

// The range holding `address`: its base and record.
std::optional<std::pair<const void*, HostRange>> hostRange(const void* address) noexcept {
  auto& memory = hostMemory();
  std::lock_guard lock(memory.mutex);
  auto it = memory.ranges.upper_bound(address);
  if (it == memory.ranges.begin()) return std::nullopt;
  --it;
  const auto offset = static_cast<const char*>(address) - static_cast<const char*>(it->first);
  if (offset < 0 || static_cast<std::size_t>(offset) >= it->second.bytes) return std::nullopt;
  return *it;
}

CUresult allocateHost(void** pp, std::size_t bytes, unsigned flags) noexcept {
  if (pp == nullptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  constexpr std::size_t kPage = 4096;
  void* memory = CuClient::get().allocateRegionHost(bytes);
  if (memory == nullptr) memory = std::aligned_alloc(kPage, (bytes + kPage - 1) / kPage * kPage);
  if (memory == nullptr) return CUDA_ERROR_OUT_OF_MEMORY;
  auto& state = hostMemory();
  std::lock_guard lock(state.mutex);
  state.ranges[memory] = HostRange{bytes, flags, true};
  *pp = memory;
  return CUDA_SUCCESS;
}

// The device address of region host memory at `host`, asked of the worker once per segment. A
// segment the worker mapped elsewhere than the application is recorded as a device allocation
// there, so that copies and pointer queries naming the device address find it.
CUresult regionDevicePointer(CUdeviceptr* device, const void* host) noexcept {
  const auto pinned = CuClient::get().findRegionHost(host, 1);
  if (!pinned) return CUDA_ERROR_NOT_SUPPORTED;
  auto& memory = hostMemory();
  {
    std::lock_guard lock(memory.mutex);
    if (auto known = memory.segmentDevice.find(pinned->segment); known != memory.segmentDevice.end()) {
      *device = known->second + pinned->offset;
      return CUDA_SUCCESS;
    }
  }
  std::vector<std::byte> args;
  api::ArgWriter(args).put(pinned->segment);
  Outcome outcome;
  {
    DriverCall call;
    outcome = call.call(Method::flytRegionDevicePointer, args);
  }
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  std::uint64_t base = 0;
  std::uint64_t bytes = 0;
  api::ArgReader reader(outcome.results);
  if (!reader.get(base) || !reader.get(bytes) || !reader.exhausted() || base == 0) return CUDA_ERROR_UNKNOWN;
  if (base != reinterpret_cast<std::uintptr_t>(host) - pinned->offset) DriverState::get().allocated(base, bytes);
  {
    std::lock_guard lock(memory.mutex);
    memory.segmentDevice.emplace(pinned->segment, base);
  }
  *device = base + pinned->offset;
  return CUDA_SUCCESS;
}

// One attribute of `address`, written to `data`.
CUresult pointerAttribute(void* data, CUpointer_attribute attribute, CUdeviceptr address) noexcept {
  if (data == nullptr) return CUDA_ERROR_INVALID_VALUE;
  const auto device = DriverState::get().allocation(address);
  const auto* hostAddress = reinterpret_cast<const void*>(static_cast<std::uintptr_t>(address));
  const auto host = device ? std::nullopt : hostRange(hostAddress);
  const CUcontext context = DriverState::get().current();
  const auto contextInfo = DriverState::get().context(context);
  auto put = [&](auto value) {
    std::memcpy(data, &value, sizeof value);
    return CUDA_SUCCESS;
  };
  switch (attribute) {
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
      if (!device && !host) return CUDA_ERROR_INVALID_VALUE;
      return put(static_cast<unsigned>(device ? CU_MEMORYTYPE_DEVICE : CU_MEMORYTYPE_HOST));
    case CU_POINTER_ATTRIBUTE_CONTEXT:
      if (!device && !host) return CUDA_ERROR_INVALID_VALUE;
      return put(context);
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER: {
      if (device) return put(address);
      CUdeviceptr mapped = 0;
      if (!host || regionDevicePointer(&mapped, hostAddress) != CUDA_SUCCESS) return CUDA_ERROR_INVALID_VALUE;
      return put(mapped);
    }
    case CU_POINTER_ATTRIBUTE_HOST_POINTER:
      if (!host) return CUDA_ERROR_INVALID_VALUE;
      return put(const_cast<void*>(hostAddress));
    case CU_POINTER_ATTRIBUTE_IS_MANAGED: return put(DriverState::get().isManaged(address) ? 1u : 0u);
    case CU_POINTER_ATTRIBUTE_MAPPED: return put(device || host ? 1u : 0u);
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
      if (!device && !host) return CUDA_ERROR_INVALID_VALUE;
      return put(static_cast<int>(contextInfo ? contextInfo->device : 0));
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
      if (device) return put(device->first);
      if (host) return put(static_cast<CUdeviceptr>(reinterpret_cast<std::uintptr_t>(host->first)));
      return CUDA_ERROR_INVALID_VALUE;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
      if (device) return put(device->second);
      if (host) return put(host->second.bytes);
      return CUDA_ERROR_INVALID_VALUE;
    case CU_POINTER_ATTRIBUTE_BUFFER_ID:
      if (!device) return CUDA_ERROR_INVALID_VALUE;
      return put(static_cast<unsigned long long>(device->first));
    case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS: return put(1u);
    case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE: return put(0u);
    default: return CUDA_ERROR_NOT_SUPPORTED;
  }
}

}  // namespace
}  // namespace flyt::interpose::cu

using namespace flyt::interpose::cu;
namespace api = flyt::api;

FLYT_CU_EXPORT CUresult cuMemAllocHost_v2(void** pp, size_t bytesize) { return allocateHost(pp, bytesize, 0); }

FLYT_CU_EXPORT CUresult cuMemHostAlloc(void** pp, size_t bytesize, unsigned int Flags) {
  constexpr unsigned kKnownFlags = CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_WRITECOMBINED;
  if ((Flags & ~kKnownFlags) != 0) return CUDA_ERROR_INVALID_VALUE;
  return allocateHost(pp, bytesize, Flags);
}

FLYT_CU_EXPORT CUresult cuMemFreeHost(void* p) {
  auto& memory = hostMemory();
  {
    std::lock_guard lock(memory.mutex);
    auto it = memory.ranges.find(p);
    if (it == memory.ranges.end() || !it->second.owned) return CUDA_ERROR_INVALID_VALUE;
    memory.ranges.erase(it);
  }
  if (!CuClient::get().freeRegionHost(p)) std::free(p);
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr* pdptr, void* p, unsigned int Flags) {
  if (pdptr == nullptr || p == nullptr || Flags != 0) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  if (!hostRange(p)) return CUDA_ERROR_INVALID_VALUE;
  const CUresult error = regionDevicePointer(pdptr, p);
  if (error == CUDA_ERROR_NOT_SUPPORTED) {
    static std::once_flag logged;
    std::call_once(logged, [] {
      flyt::logger("interpose").warn(
          "cuMemHostGetDevicePointer: the memory is not in the session's shared data region (a TCP session, a "
          "full region, or cuMemHostRegister'd memory), so the GPU cannot reach it: CUDA_ERROR_NOT_SUPPORTED");
    });
  }
  return error;
}

FLYT_CU_EXPORT CUresult cuMemHostGetFlags(unsigned int* pFlags, void* p) {
  if (pFlags == nullptr) return CUDA_ERROR_INVALID_VALUE;
  const auto range = hostRange(p);
  if (!range) return CUDA_ERROR_INVALID_VALUE;
  *pFlags = range->second.flags;
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuMemHostRegister_v2(void* p, size_t bytesize, unsigned int Flags) {
  if (p == nullptr || bytesize == 0) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  if (hostRange(p)) return CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED;
  auto& memory = hostMemory();
  std::lock_guard lock(memory.mutex);
  memory.ranges[p] = HostRange{bytesize, Flags, false};
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuMemHostUnregister(void* p) {
  auto& memory = hostMemory();
  std::lock_guard lock(memory.mutex);
  auto it = memory.ranges.find(p);
  if (it == memory.ranges.end() || it->second.owned) return CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED;
  memory.ranges.erase(it);
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuPointerGetAttribute(void* data, CUpointer_attribute attribute, CUdeviceptr ptr) {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  return pointerAttribute(data, attribute, ptr);
}

// As the driver: an attribute that does not apply to the pointer leaves its slot zeroed, not an error.
FLYT_CU_EXPORT CUresult cuPointerGetAttributes(unsigned int numAttributes, CUpointer_attribute* attributes, void** data,
                                               CUdeviceptr ptr) {
  if (numAttributes != 0 && (attributes == nullptr || data == nullptr)) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  for (unsigned i = 0; i < numAttributes; ++i) {
    if (data[i] == nullptr) continue;
    if (pointerAttribute(data[i], attributes[i], ptr) != CUDA_SUCCESS) {
      // A zeroed answer of the attribute's size (the largest is a pointer or a 64-bit value).
      const bool wide = attributes[i] == CU_POINTER_ATTRIBUTE_CONTEXT || attributes[i] == CU_POINTER_ATTRIBUTE_DEVICE_POINTER ||
                        attributes[i] == CU_POINTER_ATTRIBUTE_HOST_POINTER || attributes[i] == CU_POINTER_ATTRIBUTE_RANGE_START_ADDR ||
                        attributes[i] == CU_POINTER_ATTRIBUTE_RANGE_SIZE || attributes[i] == CU_POINTER_ATTRIBUTE_BUFFER_ID;
      std::memset(data[i], 0, wide ? 8 : 4);
    }
  }
  return CUDA_SUCCESS;
}
