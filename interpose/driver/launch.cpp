// Kernel launches: batched, never waited for (errors surface at the next call that synchronises).
//
// The parameters travel as the kernel's packed parameter block: from `extra`
// (CU_LAUNCH_PARAM_BUFFER_POINTER/SIZE) as given, or packed here from kernelParams by the layout
// that came back with the function's lookup (modules.cpp). The worker launches with the block.
//
// Wire: cuLaunchKernel {u64 function, u32 grid x y z, u32 block x y z, u32 shared bytes,
// u64 stream, u32 block bytes, block}; cuLaunchKernelEx the same with {u32 attribute count,
// CUlaunchAttribute each} before the block bytes.
#include <cuda.h>

#include <cstring>
#include <span>

#include "driver_client.hpp"
#include "driver_internal.hpp"
#include "flyt/transport/log.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {

// The packed parameter block, or an error.
CUresult packParams(CUfunction f, void** kernelParams, void** extra, std::vector<std::byte>& block) noexcept {
  if (extra != nullptr) {
    const void* buffer = nullptr;
    std::size_t bytes = 0;
    for (std::size_t i = 0; extra[i] != CU_LAUNCH_PARAM_END; i += 2) {
      if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER) {
        buffer = extra[i + 1];
      } else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE) {
        if (extra[i + 1] == nullptr) return CUDA_ERROR_INVALID_VALUE;
        std::memcpy(&bytes, extra[i + 1], sizeof bytes);
      } else {
        return CUDA_ERROR_NOT_SUPPORTED;
      }
    }
    if (bytes != 0 && buffer == nullptr) return CUDA_ERROR_INVALID_VALUE;
    const auto* begin = static_cast<const std::byte*>(buffer);
    block.assign(begin, begin + bytes);
    return CUDA_SUCCESS;
  }
  auto layout = DriverState::get().layout(wireHandle(f));
  if (!layout && refreshLayout(wireHandle(f)) == CUDA_SUCCESS) layout = DriverState::get().layout(wireHandle(f));
  if (!layout) {
    flyt::logger("interpose").warn("cuLaunchKernel: the parameter layout of function {} is unknown; pass the "
                                   "parameters with `extra`", wireHandle(f));
    return CUDA_ERROR_NOT_SUPPORTED;
  }
  block.assign(layout->bytes, std::byte{0});
  if (!layout->params.empty() && kernelParams == nullptr) return CUDA_ERROR_INVALID_VALUE;
  for (std::size_t i = 0; i < layout->params.size(); ++i) {
    const auto& param = layout->params[i];
    if (kernelParams[i] == nullptr || param.offset + param.size > block.size()) return CUDA_ERROR_INVALID_VALUE;
    std::memcpy(block.data() + param.offset, kernelParams[i], param.size);
  }
  return CUDA_SUCCESS;
}

namespace {

struct Geometry {
  unsigned grid[3];
  unsigned blockDim[3];
  unsigned sharedBytes;
  CUstream stream;
};

CUresult launch(Method method, CUfunction f, const Geometry& g, std::span<const CUlaunchAttribute> attributes,
                void** kernelParams, void** extra) {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  if (f == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  const StreamWork work(g.stream);
  std::vector<std::byte> block;
  if (CUresult error = packParams(f, kernelParams, extra, block); error != CUDA_SUCCESS) return error;
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(wireHandle(f));
  for (unsigned v : g.grid) writer.put(static_cast<std::uint32_t>(v));
  for (unsigned v : g.blockDim) writer.put(static_cast<std::uint32_t>(v));
  writer.put(static_cast<std::uint32_t>(g.sharedBytes));
  writer.put(wireHandle(g.stream));
  if (method == Method::cuLaunchKernelEx) {
    writer.put(static_cast<std::uint32_t>(attributes.size()));
    for (const auto& attribute : attributes) writer.put(attribute);
  }
  writer.put(static_cast<std::uint32_t>(block.size()));
  writer.putBytes(block);
  return DriverCall().enqueue(method, args);
}

CUresult launchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                      unsigned shared, CUstream stream, void** kernelParams, void** extra) {
  return launch(Method::cuLaunchKernel, f, Geometry{{gx, gy, gz}, {bx, by, bz}, shared, stream}, {}, kernelParams,
                extra);
}

CUresult launchKernelEx(const CUlaunchConfig* config, CUfunction f, void** kernelParams, void** extra,
                        bool perThreadStream) {
  if (config == nullptr || (config->numAttrs != 0 && config->attrs == nullptr)) return CUDA_ERROR_INVALID_VALUE;
  const CUstream stream = perThreadStream ? perThread(config->hStream) : config->hStream;
  const Geometry g{{config->gridDimX, config->gridDimY, config->gridDimZ},
                   {config->blockDimX, config->blockDimY, config->blockDimZ},
                   config->sharedMemBytes,
                   stream};
  return launch(Method::cuLaunchKernelEx, f, g, {config->attrs, config->numAttrs}, kernelParams, extra);
}

// cuOccupancyMaxActiveClusters: the configuration as cuLaunchKernelEx sends it, without parameters.
CUresult activeClusters(int* clusters, CUfunction f, const CUlaunchConfig* config) {
  if (clusters == nullptr || config == nullptr || (config->numAttrs != 0 && config->attrs == nullptr)) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(wireHandle(f));
  for (unsigned v : {config->gridDimX, config->gridDimY, config->gridDimZ, config->blockDimX, config->blockDimY,
                     config->blockDimZ, config->sharedMemBytes}) {
    writer.put(static_cast<std::uint32_t>(v));
  }
  writer.put(wireHandle(config->hStream));
  writer.put(static_cast<std::uint32_t>(config->numAttrs));
  for (unsigned i = 0; i < config->numAttrs; ++i) writer.put(config->attrs[i]);
  auto outcome = DriverCall().call(Method::cuOccupancyMaxActiveClusters, args);
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  std::int32_t count = 0;
  api::ArgReader reader(outcome.results);
  if (!reader.get(count)) return CUDA_ERROR_UNKNOWN;
  *clusters = count;
  return CUDA_SUCCESS;
}

}  // namespace
}  // namespace flyt::interpose::cu

using namespace flyt::interpose::cu;

FLYT_CU_EXPORT CUresult cuOccupancyMaxActiveClusters(int* numClusters, CUfunction func, const CUlaunchConfig* config) {
  return activeClusters(numClusters, func, config);
}
namespace api = flyt::api;

FLYT_CU_EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ,
                                       unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ,
                                       unsigned int sharedMemBytes, CUstream hStream, void** kernelParams,
                                       void** extra) {
  return launchKernel(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream,
                      kernelParams, extra);
}

FLYT_CU_EXPORT CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                                            unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY,
                                            unsigned int blockDimZ, unsigned int sharedMemBytes, CUstream hStream,
                                            void** kernelParams, void** extra) {
  return launchKernel(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes,
                      perThread(hStream), kernelParams, extra);
}

FLYT_CU_EXPORT CUresult cuLaunchKernelEx(const CUlaunchConfig* config, CUfunction f, void** kernelParams, void** extra) {
  return launchKernelEx(config, f, kernelParams, extra, false);
}

FLYT_CU_EXPORT CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig* config, CUfunction f, void** kernelParams,
                                              void** extra) {
  return launchKernelEx(config, f, kernelParams, extra, true);
}

// A cooperative launch is cuLaunchKernelEx with CU_LAUNCH_ATTRIBUTE_COOPERATIVE (the worker's driver
// checks that the grid fits the device at once, as cuLaunchCooperativeKernel does).
namespace {
CUresult cooperative(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                     unsigned shared, CUstream stream, void** kernelParams) {
  CUlaunchAttribute attribute{};
  attribute.id = CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
  attribute.value.cooperative = 1;
  CUlaunchConfig config{};
  config.gridDimX = gx;
  config.gridDimY = gy;
  config.gridDimZ = gz;
  config.blockDimX = bx;
  config.blockDimY = by;
  config.blockDimZ = bz;
  config.sharedMemBytes = shared;
  config.hStream = stream;
  config.attrs = &attribute;
  config.numAttrs = 1;
  return cuLaunchKernelEx(&config, f, kernelParams, nullptr);
}
}  // namespace

FLYT_CU_EXPORT CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                                                  unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY,
                                                  unsigned int blockDimZ, unsigned int sharedMemBytes, CUstream hStream,
                                                  void** kernelParams) {
  return cooperative(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream,
                     kernelParams);
}

FLYT_CU_EXPORT CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                                                       unsigned int gridDimZ, unsigned int blockDimX,
                                                       unsigned int blockDimY, unsigned int blockDimZ,
                                                       unsigned int sharedMemBytes, CUstream hStream,
                                                       void** kernelParams) {
  return cooperative(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes,
                     perThread(hStream), kernelParams);
}
