// Pinned host memory: cudaMallocHost, cudaHostAlloc, cudaFreeHost, cudaHostGetFlags,
// cudaHostRegister, cudaHostUnregister, cudaHostGetDevicePointer.
//
// On shared memory, cudaMallocHost/cudaHostAlloc memory is carved from the session's data region:
// segments the worker has mapped and registered with cudaHostRegister, so a copy from or to it is one
// DMA from the application's own buffer (memcpy.cpp). Where there is no region (TCP, or /dev/shm
// full, or the worker could not register more memory) the allocation is page-aligned memory of this
// process, copied like any pageable memory: slower, still correct. Region segments are kept (and
// stay registered) for the session's life; freed blocks are reused by later allocations.
//
// cudaHostRegister cannot move the application's existing memory into the region: registered ranges
// are recorded (cudaHostUnregister, pointer attributes) and copied like pageable memory. Every flag is
// accepted. Mapped memory has no device address the application could use yet:
// cudaHostGetDevicePointer is not supported.
//
// The table is process state, as NVIDIA's runtime keeps it; every function may be called from any
// thread.
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <map>
#include <mutex>

#include "client.hpp"
#include "host_memory.hpp"
#include "flyt/transport/log.hpp"

#define FLYT_CUDART_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose {
namespace {

constexpr unsigned kAllocFlags = cudaHostAllocPortable | cudaHostAllocMapped | cudaHostAllocWriteCombined;
constexpr unsigned kRegisterFlags =
    cudaHostRegisterPortable | cudaHostRegisterMapped | cudaHostRegisterIoMemory | cudaHostRegisterReadOnly;

struct HostRange {
  std::size_t bytes;
  unsigned flags;
  bool allocated;  // by cudaHostAlloc/cudaMallocHost (else registered)
  bool inRegion;   // allocated in the session's data region (else memory of this process)
};

struct HostTable {
  std::mutex mutex;
  std::map<std::uintptr_t, HostRange> ranges;  // by base address; ranges never overlap

  // The range holding [pointer, pointer + bytes), or end().
  std::map<std::uintptr_t, HostRange>::iterator find(const void* pointer, std::size_t bytes = 1) {
    const auto start = reinterpret_cast<std::uintptr_t>(pointer);
    auto it = ranges.upper_bound(start);
    if (it == ranges.begin()) return ranges.end();
    --it;
    const std::uintptr_t offset = start - it->first;
    return offset < it->second.bytes && bytes <= it->second.bytes - offset ? it : ranges.end();
  }
  bool overlaps(std::uintptr_t start, std::size_t bytes) {
    auto next = ranges.lower_bound(start);
    if (next != ranges.end() && next->first - start < bytes) return true;
    if (next == ranges.begin()) return false;
    auto previous = std::prev(next);
    return start - previous->first < previous->second.bytes;
  }
};

HostTable& table() {
  static HostTable instance;
  return instance;
}

cudaError_t hostAlloc(void** pointer, std::size_t size, unsigned flags) {
  if (pointer == nullptr || (flags & ~kAllocFlags) != 0) return cudaErrorInvalidValue;
  *pointer = nullptr;
  if (size == 0) return cudaSuccess;
  void* memory = Client::get().allocateRegionHost(size);
  const bool inRegion = memory != nullptr;
  if (!inRegion) {
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    if (size > SIZE_MAX - page) return cudaErrorMemoryAllocation;
    memory = std::aligned_alloc(page, (size + page - 1) / page * page);
    if (memory == nullptr) return cudaErrorMemoryAllocation;
  }
  auto& host = table();
  std::lock_guard lock(host.mutex);
  host.ranges[reinterpret_cast<std::uintptr_t>(memory)] = {size, flags, true, inRegion};
  *pointer = memory;
  return cudaSuccess;
}

}  // namespace

bool isPinnedHostMemory(const void* pointer) noexcept {
  auto& host = table();
  std::lock_guard lock(host.mutex);
  return host.find(pointer) != host.ranges.end();
}

}  // namespace flyt::interpose

using flyt::interpose::recordResult;

FLYT_CUDART_EXPORT cudaError_t cudaMallocHost(void** ptr, size_t size) {
  return recordResult(flyt::interpose::hostAlloc(ptr, size, cudaHostAllocDefault));
}

FLYT_CUDART_EXPORT cudaError_t cudaHostAlloc(void** pHost, size_t size, unsigned int flags) {
  return recordResult(flyt::interpose::hostAlloc(pHost, size, flags));
}

FLYT_CUDART_EXPORT cudaError_t cudaFreeHost(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  bool inRegion = false;
  {
    auto& host = flyt::interpose::table();
    std::lock_guard lock(host.mutex);
    auto it = host.ranges.find(reinterpret_cast<std::uintptr_t>(ptr));
    if (it == host.ranges.end() || !it->second.allocated) return recordResult(cudaErrorInvalidValue);
    inRegion = it->second.inRegion;
    host.ranges.erase(it);
  }
  if (!inRegion) {
    std::free(ptr);
    return cudaSuccess;
  }
  // The GPU may still be copying from or to the block (an asynchronous copy): like NVIDIA's
  // cudaFreeHost, wait for the device before the block can be handed out again.
  const cudaError_t drained = ::cudaDeviceSynchronize();
  (void)flyt::interpose::Client::get().freeRegionHost(ptr);
  return drained == cudaErrorDevicesUnavailable ? recordResult(drained) : cudaSuccess;
}

// NVIDIA's answers only for memory of cudaHostAlloc/cudaMallocHost, at any address inside it.
FLYT_CUDART_EXPORT cudaError_t cudaHostGetFlags(unsigned int* pFlags, void* pHost) {
  if (pFlags == nullptr) return recordResult(cudaErrorInvalidValue);
  auto& host = flyt::interpose::table();
  std::lock_guard lock(host.mutex);
  auto it = host.find(pHost);
  if (it == host.ranges.end() || !it->second.allocated) return recordResult(cudaErrorInvalidValue);
  *pFlags = it->second.flags;
  return cudaSuccess;
}

FLYT_CUDART_EXPORT cudaError_t cudaHostRegister(void* ptr, size_t size, unsigned int flags) {
  if (ptr == nullptr || size == 0 || (flags & ~flyt::interpose::kRegisterFlags) != 0) {
    return recordResult(cudaErrorInvalidValue);
  }
  const auto start = reinterpret_cast<std::uintptr_t>(ptr);
  if (size > UINTPTR_MAX - start) return recordResult(cudaErrorInvalidValue);
  auto& host = flyt::interpose::table();
  std::lock_guard lock(host.mutex);
  if (host.overlaps(start, size)) return recordResult(cudaErrorHostMemoryAlreadyRegistered);
  host.ranges[start] = {size, flags, false, false};
  return cudaSuccess;
}

FLYT_CUDART_EXPORT cudaError_t cudaHostUnregister(void* ptr) {
  auto& host = flyt::interpose::table();
  std::lock_guard lock(host.mutex);
  auto it = host.ranges.find(reinterpret_cast<std::uintptr_t>(ptr));
  if (it == host.ranges.end() || it->second.allocated) return recordResult(cudaErrorHostMemoryNotRegistered);
  host.ranges.erase(it);
  return cudaSuccess;
}

FLYT_CUDART_EXPORT cudaError_t cudaHostGetDevicePointer(void** pDevice, void* pHost, unsigned int flags) {
  if (pDevice == nullptr || flags != 0) return recordResult(cudaErrorInvalidValue);
  {
    auto& host = flyt::interpose::table();
    std::lock_guard lock(host.mutex);
    if (host.find(pHost) == host.ranges.end()) return recordResult(cudaErrorInvalidValue);
  }
  static std::atomic<bool> logged{false};
  if (!logged.exchange(true)) {
    flyt::logger("interpose").warn(
        "cudaHostGetDevicePointer is not supported: the GPU is in another process and cannot map "
        "this process's memory (mapped pinned memory needs the zero-copy data region)");
  }
  return recordResult(cudaErrorNotSupported);
}
