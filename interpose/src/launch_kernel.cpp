// Kernel launches: <<<>>> (__cudaPushCallConfiguration, __cudaPopCallConfiguration, __cudaGetKernel,
// __cudaLaunchKernel[_ptsz]) and cudaLaunchKernel[_ptsz].
//
// Wire mapping. Flyt sends no method that NVIDIA does not export; the kernel calls borrow the ids of
// the API entries whose work they do (api/cudart.toml):
//   method id of               carries                                                    kind
//   __cudaRegisterFatBinary    fatbin upload -> module id (register_fatbin.cpp)          sync
//   __cudaRegisterFunction     kernel lookup by name in a module -> kernel id + layout   sync
//   cudaLaunchKernel           one launch (also for __cudaLaunchKernel[_ptsz])           async
//   cudaLaunchKernelExC        one launch with flags and a cluster (also for             async
//                              cudaLaunchCooperativeKernel[_ptsz])
//   cudaGetSymbolAddress       variable lookup by name -> device address (symbols.cpp)   sync
//
// __cudaRegisterFatBinary: args {u64 FNV-1a hash, u64 total bytes, u64 offset}, the chunk
//   [offset, offset + n) as inline payload, in order; the last chunk's results {u64 module id}.
//   Before the first chunk the client asks once, synchronously, whether the node already has the
//   image: offset == total and no payload; results {u64 module id}, or {u64 0} for "not cached"
//   (a result, not an error: nothing becomes the thread's last error), after which it uploads. The
//   worker stores every image it loaded from an upload in the node's fatbin cache (module_cache.hpp).
// __cudaRegisterFunction: args {u64 module id, name bytes (the rest)};
//   results {u64 kernel id, u32 count, count x {u32 offset, u32 size}}.
// cudaLaunchKernel: args {u64 kernel id, dim3 grid, dim3 block, u64 sharedMem, u64 stream,
//   packed parameters (the rest)}. cudaLaunchKernelExC: the same with {u32 flags (bit 0: cooperative),
//   dim3 cluster (all zero: none)} after the stream. The packed buffer is the kernel's parameter block as the driver
//   lays it out (cuKernelGetParamInfo on the worker): args[i] copied to offset i, size i.
//
// A kernel's first launch uploads its fatbin (once per fatbin) and looks the kernel up (once per
// kernel); both are synchronous, the launch itself is batched. nvcc's stub discards the launch's
// return value, so every failure is also the thread's last error; a failure on the worker comes back
// with the next synchronising call.
// cudaLaunchKernelExC forwards the launch attributes cooperative and cluster dimension (and skips
// cudaLaunchAttributeIgnore); any other attribute is refused with cudaErrorNotSupported.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "client.hpp"
#include "flyt/api/codec.hpp"
#include "flyt/transport/log.hpp"
#include "registry.hpp"

#define FLYT_CUDART_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose {
namespace {

// The driver's limit on a kernel's parameter block (CUDA 12.1+).
constexpr std::size_t kMaxParamBytes = 32764;

struct CallConfiguration {
  dim3 grid;
  dim3 block;
  std::size_t sharedMem;
  cudaStream_t stream;
};
thread_local std::vector<CallConfiguration> t_configurations;

cudaError_t resolve(FunctionRecord& function) {
  std::uint64_t moduleId = 0;
  if (auto loaded = loadedModule(*function.fatbin, &moduleId); loaded != cudaSuccess) return loaded;
  std::vector<std::byte> args;
  api::ArgWriter(args).put(moduleId);
  const auto* name = reinterpret_cast<const std::byte*>(function.deviceName.data());
  args.insert(args.end(), name, name + function.deviceName.size());
  auto outcome = Client::get().call(api::Method::__cudaRegisterFunction, args);
  if (outcome.error != cudaSuccess) return outcome.error;

  api::ArgReader reader(outcome.results);
  std::uint64_t kernelId = 0;
  std::uint32_t count = 0;
  if (!reader.get(kernelId) || !reader.get(count) || kernelId == 0) return cudaErrorUnknown;
  std::vector<KernelParam> params(count);
  std::size_t bytes = 0;
  for (auto& param : params) {
    if (!reader.get(param.offset) || !reader.get(param.size)) return cudaErrorUnknown;
    bytes = std::max<std::size_t>(bytes, std::size_t{param.offset} + param.size);
  }
  if (!reader.exhausted() || bytes > kMaxParamBytes) return cudaErrorUnknown;
  function.kernelId = kernelId;
  function.params = std::move(params);
  function.paramBytes = bytes;
  flyt::logger("interpose").debug("kernel {} is id {} ({} parameters, {} bytes)", function.deviceName,
                                  kernelId, count, bytes);
  return cudaSuccess;
}

// The record of a registered kernel (the host stub or the handle __cudaGetKernel gave out), looked
// up in the session if it was not yet. Call with registry().mutex held.
cudaError_t resolvedLocked(const void* func, FunctionRecord** record) {
  auto& reg = registry();
  auto it = reg.functions.find(func);
  if (it == reg.functions.end()) return cudaErrorInvalidDeviceFunction;
  auto& function = it->second;
  if (function.failure != cudaSuccess) return function.failure;
  if (function.kernelId == 0) {
    if (auto resolved = resolve(function); resolved != cudaSuccess) {
      function.failure = resolved;
      return resolved;
    }
  }
  *record = &function;
  return cudaSuccess;
}

// What cudaLaunchKernelExC adds to a launch (the wire's flags and cluster).
struct LaunchExtras {
  std::uint32_t flags = 0;  // bit 0: cooperative
  dim3 cluster{0, 0, 0};
};
constexpr std::uint32_t kCooperative = 1;

// Builds the launch call of a registered kernel.
cudaError_t packLaunch(const void* func, dim3 grid, dim3 block, void** args, std::size_t sharedMem,
                       cudaStream_t stream, const LaunchExtras* extras, std::vector<std::byte>& call) {
  std::lock_guard lock(registry().mutex);
  FunctionRecord* record = nullptr;
  if (auto resolved = resolvedLocked(func, &record); resolved != cudaSuccess) return resolved;
  const auto& function = *record;
  // A kernel without parameters gets an uninitialised args array from nvcc: never read it then.
  if (!function.params.empty() && args == nullptr) return cudaErrorInvalidValue;
  api::ArgWriter writer(call);
  writer.put(function.kernelId);
  writer.put(grid);
  writer.put(block);
  writer.put(static_cast<std::uint64_t>(sharedMem));
  writer.put(static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(stream)));
  if (extras != nullptr) {
    writer.put(extras->flags);
    writer.put(extras->cluster);
  }
  const std::size_t base = call.size();
  call.resize(base + function.paramBytes);
  for (std::size_t i = 0; i < function.params.size(); ++i) {
    if (args[i] == nullptr) return cudaErrorInvalidValue;
    std::memcpy(call.data() + base + function.params[i].offset, args[i], function.params[i].size);
  }
  return cudaSuccess;
}

cudaError_t launch(const void* func, dim3 grid, dim3 block, void** args, std::size_t sharedMem,
                   cudaStream_t stream, bool perThread, const LaunchExtras* extras = nullptr) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0) {
    return recordResult(cudaErrorInvalidConfiguration);
  }
  // The worker runs one session's calls on one thread: the per-thread default stream of the
  // application's threads is that thread's.
  if (perThread && stream == nullptr) stream = cudaStreamPerThread;
  std::vector<std::byte> call;
  if (auto packed = packLaunch(func, grid, block, args, sharedMem, stream, extras, call); packed != cudaSuccess) {
    return recordResult(packed);
  }
  const auto method = extras != nullptr ? api::Method::cudaLaunchKernelExC : api::Method::cudaLaunchKernel;
  return recordResult(Client::get().enqueue(method, call));
}

cudaError_t launchEx(const cudaLaunchConfig_t* config, const void* func, void** args, bool perThread) {
  if (config == nullptr || (config->numAttrs != 0 && config->attrs == nullptr)) {
    return recordResult(cudaErrorInvalidValue);
  }
  LaunchExtras extras;
  for (unsigned i = 0; i < config->numAttrs; ++i) {
    const cudaLaunchAttribute& attribute = config->attrs[i];
    switch (attribute.id) {
      case cudaLaunchAttributeIgnore: break;
      case cudaLaunchAttributeCooperative:
        extras.flags = attribute.val.cooperative != 0 ? extras.flags | kCooperative : extras.flags & ~kCooperative;
        break;
      case cudaLaunchAttributeClusterDimension:
        extras.cluster = dim3(attribute.val.clusterDim.x, attribute.val.clusterDim.y, attribute.val.clusterDim.z);
        if (extras.cluster.x == 0 || extras.cluster.y == 0 || extras.cluster.z == 0) {
          return recordResult(cudaErrorInvalidValue);
        }
        break;
      default:
        flyt::logger("interpose").warn("cudaLaunchKernelExC: launch attribute {} is not supported",
                                       static_cast<int>(attribute.id));
        return recordResult(cudaErrorNotSupported);
    }
  }
  return launch(func, config->gridDim, config->blockDim, args, config->dynamicSmemBytes, config->stream,
                perThread, &extras);
}

}  // namespace

cudaError_t kernelIdOf(const void* func, std::uint64_t* kernelId) noexcept {
  std::lock_guard lock(registry().mutex);
  FunctionRecord* record = nullptr;
  if (auto resolved = resolvedLocked(func, &record); resolved != cudaSuccess) return resolved;
  *kernelId = record->kernelId;
  return cudaSuccess;
}

}  // namespace flyt::interpose

using namespace flyt::interpose;

// 0 means success: a non-zero answer makes nvcc's call site skip the launch.
FLYT_CUDART_EXPORT unsigned __cudaPushCallConfiguration(dim3 gridDim, dim3 blockDim, size_t sharedMem,
                                                        struct CUstream_st* stream) {
  t_configurations.push_back({gridDim, blockDim, sharedMem, stream});
  return 0;
}

FLYT_CUDART_EXPORT cudaError_t __cudaPopCallConfiguration(dim3* gridDim, dim3* blockDim, size_t* sharedMem,
                                                          void* stream) {
  if (t_configurations.empty()) return cudaErrorInvalidConfiguration;
  const auto config = t_configurations.back();
  t_configurations.pop_back();
  if (gridDim != nullptr) *gridDim = config.grid;
  if (blockDim != nullptr) *blockDim = config.block;
  if (sharedMem != nullptr) *sharedMem = config.sharedMem;
  if (stream != nullptr) *static_cast<cudaStream_t*>(stream) = config.stream;
  return cudaSuccess;
}

// Answered locally (nvcc caches the answer for the life of the process and never asks again): the
// handle is the host stub's address, which the launch functions accept as well.
FLYT_CUDART_EXPORT cudaError_t __cudaGetKernel(cudaKernel_t* kernel, const void* hostFun) {
  if (kernel == nullptr) return recordResult(cudaErrorInvalidValue);
  auto& reg = registry();
  std::lock_guard lock(reg.mutex);
  if (!reg.functions.contains(hostFun)) return recordResult(cudaErrorInvalidDeviceFunction);
  *kernel = reinterpret_cast<cudaKernel_t>(const_cast<void*>(hostFun));
  return cudaSuccess;
}

FLYT_CUDART_EXPORT cudaError_t __cudaLaunchKernel(cudaKernel_t kernel, dim3 gridDim, dim3 blockDim,
                                                  void** args, size_t sharedMem, cudaStream_t stream) {
  return launch(reinterpret_cast<const void*>(kernel), gridDim, blockDim, args, sharedMem, stream, false);
}

FLYT_CUDART_EXPORT cudaError_t __cudaLaunchKernel_ptsz(cudaKernel_t kernel, dim3 gridDim, dim3 blockDim,
                                                       void** args, size_t sharedMem, cudaStream_t stream) {
  return launch(reinterpret_cast<const void*>(kernel), gridDim, blockDim, args, sharedMem, stream, true);
}

FLYT_CUDART_EXPORT cudaError_t cudaLaunchKernel(const void* func, dim3 gridDim, dim3 blockDim, void** args,
                                                size_t sharedMem, cudaStream_t stream) {
  return launch(func, gridDim, blockDim, args, sharedMem, stream, false);
}

FLYT_CUDART_EXPORT cudaError_t cudaLaunchKernel_ptsz(const void* func, dim3 gridDim, dim3 blockDim,
                                                     void** args, size_t sharedMem, cudaStream_t stream) {
  return launch(func, gridDim, blockDim, args, sharedMem, stream, true);
}

FLYT_CUDART_EXPORT cudaError_t cudaLaunchKernelExC(const cudaLaunchConfig_t* config, const void* func, void** args) {
  return launchEx(config, func, args, false);
}

FLYT_CUDART_EXPORT cudaError_t cudaLaunchKernelExC_ptsz(const cudaLaunchConfig_t* config, const void* func,
                                                        void** args) {
  return launchEx(config, func, args, true);
}

FLYT_CUDART_EXPORT cudaError_t cudaLaunchCooperativeKernel(const void* func, dim3 gridDim, dim3 blockDim,
                                                           void** args, size_t sharedMem, cudaStream_t stream) {
  const LaunchExtras cooperative{kCooperative, dim3(0, 0, 0)};
  return launch(func, gridDim, blockDim, args, sharedMem, stream, false, &cooperative);
}

FLYT_CUDART_EXPORT cudaError_t cudaLaunchCooperativeKernel_ptsz(const void* func, dim3 gridDim, dim3 blockDim,
                                                                void** args, size_t sharedMem,
                                                                cudaStream_t stream) {
  const LaunchExtras cooperative{kCooperative, dim3(0, 0, 0)};
  return launch(func, gridDim, blockDim, args, sharedMem, stream, true, &cooperative);
}
