// cudaPointerGetAttributes. Pinned host memory (host_memory.cpp) is answered here: type host,
// hostPointer = the pointer, no device pointer (mapped memory is not supported). Every other
// pointer is asked of the worker, which knows the session's device allocations and variables.
//
// Wire: args {u64 pointer}; results struct cudaPointerAttributes (type device, device 0,
// devicePointer = the pointer for memory of the session; type unregistered for anything else).
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "client.hpp"
#include "flyt/api/codec.hpp"
#include "host_memory.hpp"

#define FLYT_CUDART_EXPORT extern "C" __attribute__((visibility("default")))

FLYT_CUDART_EXPORT cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes* attributes,
                                                        const void* ptr) {
  using namespace flyt::interpose;
  if (attributes == nullptr) return recordResult(cudaErrorInvalidValue);
  if (ptr != nullptr && isPinnedHostMemory(ptr)) {
    *attributes = cudaPointerAttributes{};
    attributes->type = cudaMemoryTypeHost;
    attributes->device = 0;
    attributes->hostPointer = const_cast<void*>(ptr);
    return cudaSuccess;
  }
  std::vector<std::byte> args;
  flyt::api::ArgWriter(args).put(static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(ptr)));
  auto outcome = Client::get().call(flyt::api::Method::cudaPointerGetAttributes, args);
  if (outcome.error != cudaSuccess) return recordResult(outcome.error);
  flyt::api::ArgReader reader(outcome.results);
  if (!reader.get(*attributes) || !reader.exhausted()) return recordResult(cudaErrorUnknown);
  return cudaSuccess;
}
