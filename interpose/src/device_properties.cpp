// cudaGetDeviceProperties: fetched once per device and answered locally afterwards (kind "cached").
// Wire: args = {i32 device}; results = the worker's struct cudaDeviceProp, byte for byte (same
// toolkit headers on both sides).
#include <cuda_runtime_api.h>

#include <map>
#include <mutex>
#include <vector>

#include "client.hpp"
#include "flyt/api/codec.hpp"

#include "cached_answers.hpp"

#define FLYT_CUDART_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose {
namespace {

struct PropertiesCache {
  std::mutex mutex;
  std::map<int, cudaDeviceProp> byDevice;
};
PropertiesCache& propertiesCache() {
  static auto* const cache = new PropertiesCache();  // leaked: used until the process's last call
  return *cache;
}

}  // namespace

void forgetDeviceProperties() noexcept {
  auto& cache = propertiesCache();
  std::lock_guard lock(cache.mutex);
  cache.byDevice.clear();
}

}  // namespace flyt::interpose

FLYT_CUDART_EXPORT cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* prop, int device) {
  using namespace flyt::interpose;
  if (prop == nullptr) return recordResult(cudaErrorInvalidValue);
  auto& mutex = propertiesCache().mutex;
  auto& cache = propertiesCache().byDevice;
  {
    std::lock_guard lock(mutex);
    if (auto it = cache.find(device); it != cache.end()) {
      *prop = it->second;
      return cudaSuccess;
    }
  }
  std::vector<std::byte> args;
  flyt::api::ArgWriter writer(args);
  writer.put(static_cast<std::int32_t>(device));
  auto outcome = Client::get().call(flyt::api::Method::cudaGetDeviceProperties, args);
  if (outcome.error != cudaSuccess) return recordResult(outcome.error);
  flyt::api::ArgReader reader(outcome.results);
  if (!reader.get(*prop) || !reader.exhausted()) return recordResult(cudaErrorUnknown);
  std::lock_guard lock(mutex);
  cache.emplace(device, *prop);
  return cudaSuccess;
}
