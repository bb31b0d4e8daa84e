// cudaDeviceReset: one sync call (args {}); the worker unloads the session's modules, resets the
// device and forgets the session's allocations, streams and events. The client then forgets what it
// learnt from the worker: module and kernel ids, parameter layouts, variable addresses and cached
// answers, so that the next launch or symbol access uploads and looks up again. Pinned host memory
// (host_memory.cpp) is this process's and stays valid.
#include <cuda_runtime_api.h>

#include "cached_answers.hpp"
#include "client.hpp"
#include "flyt/transport/log.hpp"
#include "registry.hpp"

#define FLYT_CUDART_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose {

void forgetSession() noexcept {
  auto& reg = registry();
  std::lock_guard lock(reg.mutex);
  for (auto& [handle, fatbin] : reg.fatbins) fatbin->moduleId = 0;
  for (auto& [stub, function] : reg.functions) {
    function.kernelId = 0;
    function.failure = cudaSuccess;
    function.params.clear();
    function.paramBytes = 0;
  }
  for (auto& [shadow, variable] : reg.variables) variable.deviceAddress = 0;
}

}  // namespace flyt::interpose

FLYT_CUDART_EXPORT cudaError_t cudaDeviceReset() {
  using namespace flyt::interpose;
  const auto outcome = Client::get().call(flyt::api::Method::cudaDeviceReset, {});
  forgetSession();
  forgetCachedResults();
  forgetDeviceProperties();
  flyt::logger("interpose").debug("device reset: {}", ::cudaGetErrorName(outcome.error));
  return recordResult(outcome.error);
}
