// Memory pool attributes: the value's C type follows the attribute (int for the reuse policy flags,
// cuuint64_t for the threshold and the memory counters); it travels as a u64.
#include <cuda.h>

#include <vector>

#include "driver_client.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {
namespace {

bool isIntAttribute(CUmemPool_attribute attr) {
  return attr == CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES || attr == CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC ||
         attr == CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES;
}

}  // namespace
}  // namespace flyt::interpose::cu

using namespace flyt::interpose::cu;
namespace api = flyt::api;

FLYT_CU_EXPORT CUresult cuMemPoolSetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void* value) {
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  std::uint64_t wire = 0;
  if (isIntAttribute(attr)) {
    wire = static_cast<std::uint64_t>(*static_cast<const int*>(value));
  } else {
    wire = *static_cast<const cuuint64_t*>(value);
  }
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(wireHandle(pool));
  writer.put(static_cast<std::int32_t>(attr));
  writer.put(wire);
  return DriverCall().call(Method::cuMemPoolSetAttribute, args).error;
}

FLYT_CU_EXPORT CUresult cuMemPoolGetAttribute(CUmemoryPool pool, CUmemPool_attribute attr, void* value) {
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(wireHandle(pool));
  writer.put(static_cast<std::int32_t>(attr));
  auto outcome = DriverCall().call(Method::cuMemPoolGetAttribute, args);
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  std::uint64_t wire = 0;
  api::ArgReader reader(outcome.results);
  if (!reader.get(wire)) return CUDA_ERROR_UNKNOWN;
  if (isIntAttribute(attr)) {
    *static_cast<int*>(value) = static_cast<int>(wire);
  } else {
    *static_cast<cuuint64_t*>(value) = wire;
  }
  return CUDA_SUCCESS;
}
