// Contexts. The worker creates them and names each by an id, which is the CUcontext the
// application sees. Which context is current is a per-thread fact the application's process keeps
// (driver_client.hpp): cuCtxGetCurrent, cuCtxSetCurrent, cuCtxPushCurrent and cuCtxPopCurrent cost
// no round trip, and DriverCall tells the worker before a call runs in another context than the last.
//
// Primary contexts: the worker holds at most one real retain of a device's primary context per
// session (taken when the application first retains it, or when NVIDIA's runtime asks for it
// without retaining, export_tables.cpp); the application's retains are counted here. When the count
// drops to zero the worker releases the context (freeing what the session had in it), and the
// context-local storage of NVIDIA's runtime is destroyed, as the driver does.
//
// Wire: cuDevicePrimaryCtxRetain {i32 device} -> {u64 context}; cuDevicePrimaryCtxRelease_v2 and
// cuDevicePrimaryCtxReset_v2 {i32 device}; cuCtxCreate_v4 {u32 flags, i32 device} -> {u64 context}
// (cuCtxCreate_v2 too, as cuCtxCreate_v4 without parameters); cuCtxDestroy_v2 {u64 context};
// flytSetContext {u64 context} (batched).
#include <cuda.h>

#include "driver_client.hpp"
#include "forward.hpp"
#include "driver_internal.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {
namespace {

CUcontext contextOf(std::uint64_t id) noexcept { return reinterpret_cast<CUcontext>(static_cast<std::uintptr_t>(id)); }

// The worker's current context is no longer known (it destroyed or released one): the next call
// names it again.
constexpr std::uint64_t kWorkerContextUnknown = ~0ULL;

CUresult deviceCall(Method method, CUdevice device, std::uint64_t* context = nullptr) noexcept {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  if (DriverState::get().device(device) == nullptr) return CUDA_ERROR_INVALID_DEVICE;
  std::vector<std::byte> args;
  api::ArgWriter(args).put(static_cast<std::int32_t>(device));
  DriverCall call;
  auto outcome = call.call(method, args);
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  if (context != nullptr) {
    api::ArgReader reader(outcome.results);
    if (!reader.get(*context) || *context == 0) return CUDA_ERROR_UNKNOWN;
  }
  return CUDA_SUCCESS;
}

}  // namespace

CUresult primaryContext(CUdevice device, CUcontext* context) noexcept {
  if (CUcontext known = DriverState::get().primary(device); known != nullptr) {
    *context = known;
    return CUDA_SUCCESS;
  }
  std::uint64_t id = 0;
  if (CUresult error = deviceCall(Method::cuDevicePrimaryCtxRetain, device, &id); error != CUDA_SUCCESS) return error;
  DriverState::get().setPrimary(device, contextOf(id));
  *context = contextOf(id);
  return CUDA_SUCCESS;
}

}  // namespace flyt::interpose::cu

using namespace flyt::interpose::cu;
namespace api = flyt::api;

FLYT_CU_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext* pctx, CUdevice dev) {
  if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult error = primaryContext(dev, pctx); error != CUDA_SUCCESS) return error;
  (void)DriverState::get().retainPrimary(dev);
  forgetCached(api::cu::kCacheGroup_primary);  // its state (cuDevicePrimaryCtxGetState) may be active now
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  if (DriverState::get().device(dev) == nullptr) return CUDA_ERROR_INVALID_DEVICE;
  CUcontext primary = DriverState::get().primary(dev);
  if (primary == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (DriverState::get().releasePrimary(dev) > 0) return CUDA_SUCCESS;
  forgetCached(api::cu::kCacheGroup_primary);
  DriverState::get().contextEpoch().fetch_add(1, std::memory_order_acq_rel);
  DriverState::get().storageDestroy(primary);
  DriverState::get().workerContext() = kWorkerContextUnknown;
  return deviceCall(Method::cuDevicePrimaryCtxRelease_v2, dev);
}

FLYT_CU_EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice dev) { return cuDevicePrimaryCtxRelease_v2(dev); }

FLYT_CU_EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice dev) {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  if (DriverState::get().device(dev) == nullptr) return CUDA_ERROR_INVALID_DEVICE;
  if (CUcontext primary = DriverState::get().primary(dev); primary != nullptr) {
    DriverState::get().storageDestroy(primary);
    while (DriverState::get().releasePrimary(dev) > 0) {
    }
  }
  DriverState::get().workerContext() = kWorkerContextUnknown;
  forgetCached(api::cu::kCacheGroup_primary);
  DriverState::get().contextEpoch().fetch_add(1, std::memory_order_acq_rel);
  return deviceCall(Method::cuDevicePrimaryCtxReset_v2, dev);
}

FLYT_CU_EXPORT CUresult cuDevicePrimaryCtxReset(CUdevice dev) { return cuDevicePrimaryCtxReset_v2(dev); }

FLYT_CU_EXPORT CUresult cuCtxGetCurrent(CUcontext* pctx) {
  if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *pctx = DriverState::get().current();
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuCtxSetCurrent(CUcontext ctx) {
  if (ctx != nullptr && !DriverState::get().context(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
  DriverState::get().setCurrent(ctx);
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx) {
  if (ctx == nullptr || !DriverState::get().context(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
  DriverState::get().push(ctx);
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuCtxPopCurrent_v2(CUcontext* pctx) {
  CUcontext top = DriverState::get().pop();
  if (top == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (pctx != nullptr) *pctx = top;
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuCtxGetDevice(CUdevice* device) {
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  const auto info = DriverState::get().context(DriverState::get().current());
  if (!info) return CUDA_ERROR_INVALID_CONTEXT;
  *device = info->device;
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuCtxGetDevice_v2(CUdevice* device, CUcontext ctx) {
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  const auto info = DriverState::get().context(ctx != nullptr ? ctx : DriverState::get().current());
  if (!info) return CUDA_ERROR_INVALID_CONTEXT;
  *device = info->device;
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuCtxCreate_v2(CUcontext* pctx, unsigned int flags, CUdevice dev) {
  if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  if (DriverState::get().device(dev) == nullptr) return CUDA_ERROR_INVALID_DEVICE;
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(static_cast<std::uint32_t>(flags));
  writer.put(static_cast<std::int32_t>(dev));
  DriverCall call;
  auto outcome = call.call(Method::cuCtxCreate_v4, args);
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  std::uint64_t id = 0;
  api::ArgReader reader(outcome.results);
  if (!reader.get(id) || id == 0) return CUDA_ERROR_UNKNOWN;
  *pctx = reinterpret_cast<CUcontext>(static_cast<std::uintptr_t>(id));
  DriverState::get().addContext(*pctx, ContextInfo{dev, false});
  DriverState::get().push(*pctx);  // the new context is current, here and on the worker
  DriverState::get().workerContext() = id;
  return CUDA_SUCCESS;
}

// Execution-affinity and CIG parameters are not served (CUDA_ERROR_NOT_SUPPORTED).
FLYT_CU_EXPORT CUresult cuCtxCreate_v4(CUcontext* pctx, CUctxCreateParams* ctxCreateParams, unsigned int flags,
                                       CUdevice dev) {
  if (ctxCreateParams != nullptr && (ctxCreateParams->numExecAffinityParams != 0 || ctxCreateParams->cigParams != nullptr)) {
    return CUDA_ERROR_NOT_SUPPORTED;
  }
  return cuCtxCreate_v2(pctx, flags, dev);
}

FLYT_CU_EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx) {
  const auto info = DriverState::get().context(ctx);
  if (ctx == nullptr || !info || info->primary) return CUDA_ERROR_INVALID_CONTEXT;
  std::vector<std::byte> args;
  api::ArgWriter(args).put(wireHandle(ctx));
  CUresult error;
  {
    DriverCall call;
    error = call.call(Method::cuCtxDestroy_v2, args).error;
  }
  if (error != CUDA_SUCCESS) return error;
  DriverState::get().storageDestroy(ctx);
  DriverState::get().removeContext(ctx);
  DriverState::get().workerContext() = kWorkerContextUnknown;
  return CUDA_SUCCESS;
}
