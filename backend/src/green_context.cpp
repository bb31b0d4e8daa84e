#include "green_context.hpp"

#include <cuda_runtime_api.h>
#include <cudaTypedefs.h>
#include <fmt/format.h>

#include "flyt/backend/session_limits.hpp"

namespace flyt::backend {
namespace {

using transport::Errc;
using transport::fail;

// The driver API version each entry point is asked for: the version that introduced its
// prototype (cudaTypedefs.h's PFN_<name>_v<version>).
constexpr int kResourceApi = 12040;

template <class Fn>
transport::Result<Fn> entryPoint(const char* name, int version) {
  void* entry = nullptr;
  cudaDriverEntryPointQueryResult status{};
  const cudaError_t error = ::cudaGetDriverEntryPointByVersion(name, &entry, version, cudaEnableDefault, &status);
  if (error != cudaSuccess || status != cudaDriverEntryPointSuccess || entry == nullptr) {
    return fail(Errc::kUnsupported, fmt::format("the CUDA driver has no {} (version {}): {}", name, version,
                                                error != cudaSuccess ? ::cudaGetErrorName(error)
                                                                     : "symbol not found or version too old"));
  }
  return reinterpret_cast<Fn>(entry);
}

transport::Result<GreenContextApi> runtimeApi() {
  GreenContextApi api{};
  transport::Result<void> missing;
  auto get = [&](auto& slot, const char* name, int version) {
    if (!missing) return;
    auto entry = entryPoint<std::remove_reference_t<decltype(slot)>>(name, version);
    if (entry) {
      slot = *entry;
    } else {
      missing = std::unexpected(entry.error());
    }
  };
  get(api.deviceGet, "cuDeviceGet", 2000);
  get(api.getResource, "cuDeviceGetDevResource", kResourceApi);
  get(api.split, "cuDevSmResourceSplitByCount", kResourceApi);
  get(api.generateDesc, "cuDevResourceGenerateDesc", kResourceApi);
  get(api.create, "cuGreenCtxCreate", kResourceApi);
  get(api.toContext, "cuCtxFromGreenCtx", kResourceApi);
  get(api.setCurrent, "cuCtxSetCurrent", 4000);
  get(api.destroy, "cuGreenCtxDestroy", kResourceApi);
  if (!missing) return std::unexpected(missing.error());
  return api;
}

std::unexpected<transport::Error> refusedBy(const char* step, CUresult result) {
  return fail(Errc::kUnsupported, fmt::format("{} failed (CUresult {})", step, static_cast<int>(result)));
}

}  // namespace

transport::Result<GreenContext> makeGreenContext(int ordinal, std::uint32_t percent) {
  auto api = runtimeApi();
  if (!api) return std::unexpected(api.error());
  return makeGreenContext(*api, ordinal, percent, true);
}

transport::Result<GreenContext> makeGreenContext(const GreenContextApi& api, int ordinal, std::uint32_t percent,
                                                 bool makeCurrent) {
  if (!api.complete()) return fail(Errc::kUnsupported, "the CUDA driver has no green-context API (CUDA 12.4+)");
  CUdevice device = 0;
  if (CUresult r = api.deviceGet(&device, ordinal); r != CUDA_SUCCESS) return refusedBy("cuDeviceGet", r);
  CUdevResource all{};
  if (CUresult r = api.getResource(device, &all, CU_DEV_RESOURCE_TYPE_SM); r != CUDA_SUCCESS) {
    return refusedBy("cuDeviceGetDevResource(SM)", r);
  }
  // The driver rounds a partition up to its alignment; asking for a multiple of it (rounded down
  // from the share) keeps the tenant within its grant.
  const std::uint32_t granularity = std::max(all.sm.smCoscheduledAlignment, all.sm.minSmPartitionSize);
  const std::uint32_t wanted = greenContextSmCount(all.sm.smCount, percent, granularity);
  CUdevResource group{};
  CUdevResource remaining{};
  unsigned int groups = 1;
  if (CUresult r = api.split(&group, &groups, &all, &remaining, 0, wanted); r != CUDA_SUCCESS || groups != 1) {
    return refusedBy("cuDevSmResourceSplitByCount", r);
  }
  GreenContext made;
  if (CUresult r = api.generateDesc(&made.desc, &group, 1); r != CUDA_SUCCESS) {
    return refusedBy("cuDevResourceGenerateDesc", r);
  }
  made.smCount = group.sm.smCount;
  made.deviceSmCount = all.sm.smCount;
  auto green = anotherGreenContext(api, made, ordinal);
  if (!green) return std::unexpected(green.error());
  if (makeCurrent) {
    if (CUresult r = api.setCurrent(green->context); r != CUDA_SUCCESS) {
      (void)api.destroy(green->green);
      return refusedBy("cuCtxSetCurrent", r);
    }
  }
  return green;
}

transport::Result<GreenContext> anotherGreenContext(const GreenContextApi& api, const GreenContext& partition,
                                                    int ordinal) {
  CUdevice device = 0;
  if (CUresult r = api.deviceGet(&device, ordinal); r != CUDA_SUCCESS) return refusedBy("cuDeviceGet", r);
  GreenContext made = partition;
  if (CUresult r = api.create(&made.green, partition.desc, device, CU_GREEN_CTX_DEFAULT_STREAM); r != CUDA_SUCCESS) {
    return refusedBy("cuGreenCtxCreate", r);
  }
  if (CUresult r = api.toContext(&made.context, made.green); r != CUDA_SUCCESS) {
    (void)api.destroy(made.green);
    return refusedBy("cuCtxFromGreenCtx", r);
  }
  return made;
}

}  // namespace flyt::backend
