// Prefetches, advice and range attributes of managed memory (managed_memory.cpp owns the memory).
//
// Nothing here is sent to the worker: a managed range's pages live where managed_memory.cpp's rule
// puts them (the host after a fault, the device after any call), so a prefetch to a device only
// hands host-resident memory back now instead of at the next call, and a prefetch to the host
// fetches it now. Advice changes nothing of how pages move; it is recorded per 64 KiB chunk so that
// cuMemRangeGetAttribute(s) answer what the application set, as the driver does: a value holds for
// a range when every chunk of it has it. cuStreamAttachMemAsync succeeds: the host never touches
// managed memory while the device owns it, so every association behaves as CU_MEM_ATTACH_GLOBAL.
#include <cuda.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "driver_client.hpp"
#include "driver_internal.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {
namespace {

constexpr std::uint64_t kHostBit = std::uint64_t{1} << 63;  // "accessed by" the host

struct ChunkAdvice {
  bool readMostly = false;
  CUmemLocation preferred{CU_MEM_LOCATION_TYPE_INVALID, 0};
  CUmemLocation lastPrefetch{CU_MEM_LOCATION_TYPE_INVALID, 0};
  std::uint64_t accessedBy = 0;  // bit d: device ordinal d; kHostBit: the host
};

struct Advice {
  std::mutex mutex;
  std::map<CUdeviceptr, std::vector<ChunkAdvice>> ranges;  // by managed base, created at first use
};

Advice& advice() noexcept {
  static auto* const state = new Advice;  // leaked, as the other records of the process
  return *state;
}

bool isHost(CUmemLocationType type) noexcept {
  return type == CU_MEM_LOCATION_TYPE_HOST || type == CU_MEM_LOCATION_TYPE_HOST_NUMA ||
         type == CU_MEM_LOCATION_TYPE_HOST_NUMA_CURRENT;
}

// A location a prefetch or an advice may name: a device of the session or the host.
bool validLocation(const CUmemLocation& location) noexcept {
  if (isHost(location.type)) return true;
  const auto* devices = DriverState::get().devices();
  return location.type == CU_MEM_LOCATION_TYPE_DEVICE && devices != nullptr && location.id >= 0 &&
         static_cast<std::uint32_t>(location.id) < devices->deviceCount && location.id < 63;
}

// The legacy CUdevice argument (CU_DEVICE_CPU: the host) as a location.
CUmemLocation locationOf(CUdevice device) noexcept {
  if (device == CU_DEVICE_CPU) return {CU_MEM_LOCATION_TYPE_HOST, 0};
  return {CU_MEM_LOCATION_TYPE_DEVICE, device};
}

// The legacy int answer of a location: a device ordinal, CU_DEVICE_CPU or CU_DEVICE_INVALID.
int legacyOf(const CUmemLocation& location) noexcept {
  if (location.type == CU_MEM_LOCATION_TYPE_DEVICE) return location.id;
  if (isHost(location.type)) return CU_DEVICE_CPU;
  return CU_DEVICE_INVALID;
}

bool sameLocation(const CUmemLocation& a, const CUmemLocation& b) noexcept { return a.type == b.type && a.id == b.id; }

// The chunks of the managed range that [address, address + bytes) lies in; nullopt when it is not
// inside one managed allocation.
struct Span {
  CUdeviceptr base;
  std::size_t chunks;  // of the whole range
  std::size_t first;
  std::size_t last;    // one past
};

std::optional<Span> spanOf(CUdeviceptr address, std::size_t bytes) noexcept {
  if (bytes == 0 || !DriverState::get().isManaged(address)) return std::nullopt;
  const auto range = DriverState::get().allocation(address);
  if (!range || bytes > range->second - (address - range->first)) return std::nullopt;
  const std::size_t offset = address - range->first;
  return Span{range->first, (range->second + kManagedChunkBytes - 1) / kManagedChunkBytes, offset / kManagedChunkBytes,
              (offset + bytes - 1) / kManagedChunkBytes + 1};
}

// Runs `fn` on every chunk record of the span, under the lock.
template <class Fn>
void eachChunk(const Span& span, Fn&& fn) {
  auto& state = advice();
  std::lock_guard lock(state.mutex);
  auto& chunks = state.ranges[span.base];
  if (chunks.size() != span.chunks) chunks.resize(span.chunks);
  for (std::size_t i = span.first; i < span.last; ++i) fn(chunks[i]);
}

CUresult prefetch(CUdeviceptr address, std::size_t bytes, CUmemLocation location, unsigned flags) noexcept {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  const auto span = spanOf(address, bytes);
  if (!span || flags != 0 || !validLocation(location)) return CUDA_ERROR_INVALID_VALUE;
  eachChunk(*span, [&](ChunkAdvice& chunk) { chunk.lastPrefetch = location; });
  if (isHost(location.type)) return fetchManagedToHost(address, bytes);
  handBackManagedMemory();  // what the next call would do
  return CUDA_SUCCESS;
}

CUresult advise(CUdeviceptr address, std::size_t bytes, CUmem_advise what, CUmemLocation location) noexcept {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  const auto span = spanOf(address, bytes);
  if (!span) return CUDA_ERROR_INVALID_VALUE;
  const bool locationMatters = what == CU_MEM_ADVISE_SET_PREFERRED_LOCATION || what == CU_MEM_ADVISE_SET_ACCESSED_BY ||
                               what == CU_MEM_ADVISE_UNSET_ACCESSED_BY;
  if (locationMatters && !validLocation(location)) return CUDA_ERROR_INVALID_DEVICE;
  const std::uint64_t bit = isHost(location.type) ? kHostBit : std::uint64_t{1} << (location.id & 63);
  switch (what) {
    case CU_MEM_ADVISE_SET_READ_MOSTLY: eachChunk(*span, [](ChunkAdvice& c) { c.readMostly = true; }); break;
    case CU_MEM_ADVISE_UNSET_READ_MOSTLY: eachChunk(*span, [](ChunkAdvice& c) { c.readMostly = false; }); break;
    case CU_MEM_ADVISE_SET_PREFERRED_LOCATION: eachChunk(*span, [&](ChunkAdvice& c) { c.preferred = location; }); break;
    case CU_MEM_ADVISE_UNSET_PREFERRED_LOCATION:
      eachChunk(*span, [](ChunkAdvice& c) { c.preferred = {CU_MEM_LOCATION_TYPE_INVALID, 0}; });
      break;
    case CU_MEM_ADVISE_SET_ACCESSED_BY: eachChunk(*span, [&](ChunkAdvice& c) { c.accessedBy |= bit; }); break;
    case CU_MEM_ADVISE_UNSET_ACCESSED_BY: eachChunk(*span, [&](ChunkAdvice& c) { c.accessedBy &= ~bit; }); break;
    default: return CUDA_ERROR_INVALID_VALUE;
  }
  return CUDA_SUCCESS;
}

// What every chunk of the span agrees on.
struct Agreed {
  bool readMostly = true;
  std::optional<CUmemLocation> preferred;     // nullopt: they differ
  std::optional<CUmemLocation> lastPrefetch;  // nullopt: they differ
  std::uint64_t accessedBy = ~std::uint64_t{0};
};

Agreed agreed(const Span& span) noexcept {
  Agreed all;
  bool first = true;
  eachChunk(span, [&](ChunkAdvice& c) {
    all.readMostly = all.readMostly && c.readMostly;
    all.accessedBy &= c.accessedBy;
    if (first) {
      all.preferred = c.preferred;
      all.lastPrefetch = c.lastPrefetch;
      first = false;
    }
    if (all.preferred && !sameLocation(*all.preferred, c.preferred)) all.preferred.reset();
    if (all.lastPrefetch && !sameLocation(*all.lastPrefetch, c.lastPrefetch)) all.lastPrefetch.reset();
  });
  return all;
}

CUresult rangeAttribute(void* data, std::size_t size, CUmem_range_attribute attribute, const Agreed& all) noexcept {
  if (data == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto put = [&](int value) {
    if (size != sizeof value) return CUDA_ERROR_INVALID_VALUE;
    std::memcpy(data, &value, sizeof value);
    return CUDA_SUCCESS;
  };
  const CUmemLocation none{CU_MEM_LOCATION_TYPE_INVALID, 0};
  const CUmemLocation preferred = all.preferred.value_or(none);
  const CUmemLocation prefetched = all.lastPrefetch.value_or(none);
  switch (attribute) {
    case CU_MEM_RANGE_ATTRIBUTE_READ_MOSTLY: return put(all.readMostly ? 1 : 0);
    case CU_MEM_RANGE_ATTRIBUTE_PREFERRED_LOCATION: return put(legacyOf(preferred));
    case CU_MEM_RANGE_ATTRIBUTE_LAST_PREFETCH_LOCATION: return put(legacyOf(prefetched));
    case CU_MEM_RANGE_ATTRIBUTE_PREFERRED_LOCATION_TYPE: return put(preferred.type);
    case CU_MEM_RANGE_ATTRIBUTE_PREFERRED_LOCATION_ID: return put(preferred.id);
    case CU_MEM_RANGE_ATTRIBUTE_LAST_PREFETCH_LOCATION_TYPE: return put(prefetched.type);
    case CU_MEM_RANGE_ATTRIBUTE_LAST_PREFETCH_LOCATION_ID: return put(prefetched.id);
    case CU_MEM_RANGE_ATTRIBUTE_ACCESSED_BY: {
      // Devices (CU_DEVICE_CPU for the host), the rest of the array CU_DEVICE_INVALID.
      if (size == 0 || size % sizeof(int) != 0) return CUDA_ERROR_INVALID_VALUE;
      std::vector<int> ids(size / sizeof(int), CU_DEVICE_INVALID);
      std::size_t n = 0;
      for (int d = 0; d < 63 && n < ids.size(); ++d) {
        if ((all.accessedBy >> d) & 1) ids[n++] = d;
      }
      if ((all.accessedBy & kHostBit) != 0 && n < ids.size()) ids[n] = CU_DEVICE_CPU;
      std::memcpy(data, ids.data(), size);
      return CUDA_SUCCESS;
    }
    default: return CUDA_ERROR_INVALID_VALUE;
  }
}

CUresult attach(CUstream, CUdeviceptr address, std::size_t length, unsigned flags) noexcept {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  if (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST && flags != CU_MEM_ATTACH_SINGLE) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  // length 0: the whole allocation, which must then start at `address`.
  const auto range = DriverState::get().allocation(address);
  if (!range || !DriverState::get().isManaged(address)) return CUDA_ERROR_INVALID_VALUE;
  if (length == 0 ? range->first != address : !spanOf(address, length)) return CUDA_ERROR_INVALID_VALUE;
  return CUDA_SUCCESS;
}

}  // namespace

void forgetManagedAdvice(CUdeviceptr base) noexcept {
  auto& state = advice();
  std::lock_guard lock(state.mutex);
  state.ranges.erase(base);
}

}  // namespace flyt::interpose::cu

using namespace flyt::interpose::cu;

FLYT_CU_EXPORT CUresult cuMemPrefetchAsync(CUdeviceptr devPtr, size_t count, CUdevice dstDevice, CUstream) {
  return prefetch(devPtr, count, locationOf(dstDevice), 0);
}
FLYT_CU_EXPORT CUresult cuMemPrefetchAsync_ptsz(CUdeviceptr devPtr, size_t count, CUdevice dstDevice, CUstream) {
  return prefetch(devPtr, count, locationOf(dstDevice), 0);
}
FLYT_CU_EXPORT CUresult cuMemPrefetchAsync_v2(CUdeviceptr devPtr, size_t count, CUmemLocation location,
                                              unsigned int flags, CUstream) {
  return prefetch(devPtr, count, location, flags);
}
FLYT_CU_EXPORT CUresult cuMemPrefetchAsync_v2_ptsz(CUdeviceptr devPtr, size_t count, CUmemLocation location,
                                                   unsigned int flags, CUstream) {
  return prefetch(devPtr, count, location, flags);
}

FLYT_CU_EXPORT CUresult cuMemAdvise(CUdeviceptr devPtr, size_t count, CUmem_advise advice, CUdevice device) {
  return advise(devPtr, count, advice, locationOf(device));
}
FLYT_CU_EXPORT CUresult cuMemAdvise_v2(CUdeviceptr devPtr, size_t count, CUmem_advise advice, CUmemLocation location) {
  return advise(devPtr, count, advice, location);
}

FLYT_CU_EXPORT CUresult cuMemRangeGetAttribute(void* data, size_t dataSize, CUmem_range_attribute attribute,
                                               CUdeviceptr devPtr, size_t count) {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  const auto span = spanOf(devPtr, count);
  if (!span) return CUDA_ERROR_INVALID_VALUE;
  return rangeAttribute(data, dataSize, attribute, agreed(*span));
}

FLYT_CU_EXPORT CUresult cuMemRangeGetAttributes(void** data, size_t* dataSizes, CUmem_range_attribute* attributes,
                                                size_t numAttributes, CUdeviceptr devPtr, size_t count) {
  if (numAttributes == 0 || data == nullptr || dataSizes == nullptr || attributes == nullptr) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  const auto span = spanOf(devPtr, count);
  if (!span) return CUDA_ERROR_INVALID_VALUE;
  const Agreed all = agreed(*span);
  for (std::size_t i = 0; i < numAttributes; ++i) {
    if (CUresult error = rangeAttribute(data[i], dataSizes[i], attributes[i], all); error != CUDA_SUCCESS) return error;
  }
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuStreamAttachMemAsync(CUstream hStream, CUdeviceptr dptr, size_t length, unsigned int flags) {
  return attach(hStream, dptr, length, flags);
}
FLYT_CU_EXPORT CUresult cuStreamAttachMemAsync_ptsz(CUstream hStream, CUdeviceptr dptr, size_t length,
                                                    unsigned int flags) {
  return attach(perThread(hStream), dptr, length, flags);
}
