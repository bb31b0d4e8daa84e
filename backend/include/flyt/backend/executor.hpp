// An Executor runs a session's CUDA calls: CudaExecutor on the GPU through NVIDIA's runtime,
// StandInExecutor in host memory where no GPU exists (a test double, named as such in every log).
//
// The functions with generated handlers are virtual members with NVIDIA's signatures, declared from
// the generated FLYT_API_GENERATED_SIGNATURES list; an executor overrides what it supports and the
// rest answer cudaErrorNotSupported. The operations of hand-written handlers are declared below.
// Arguments have been decoded and validated (pointers against the session's allocations, handles
// against its tables) before an executor sees them. One executor per worker, used by one thread.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "flyt/api/specs.hpp"
#include "flyt/backend/session_limits.hpp"
#include "flyt/transport/error.hpp"

namespace flyt::backend {

class Executor {
 public:
  virtual ~Executor() = default;
  Executor() = default;
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // "cuda (NVIDIA H200)" or "stand-in (host memory; test double, no GPU)", for logs.
  [[nodiscard]] virtual std::string_view describe() const = 0;

  // The SMs the session was granted (SessionLimits::smPercent: a green context's real SM count, or
  // the share under MPS); 0 when it has the whole device. Reported as multiProcessorCount.
  [[nodiscard]] virtual std::uint32_t multiprocessorGrant() const { return 0; }

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"  // the defaults ignore their arguments
#define FLYT_DECLARE_GENERATED(name, params, args) \
  virtual cudaError_t name params { return cudaErrorNotSupported; }
  FLYT_API_GENERATED_SIGNATURES(FLYT_DECLARE_GENERATED)
#undef FLYT_DECLARE_GENERATED
#pragma GCC diagnostic pop

  // Custom handlers (hand-written on both sides).
  virtual cudaError_t copyToDevice(void* device, const void* host, std::size_t bytes) = 0;
  virtual cudaError_t copyToHost(void* host, const void* device, std::size_t bytes) = 0;
  virtual cudaError_t copyOnDevice(void* to, const void* from, std::size_t bytes) = 0;
  // Copies in `stream`'s order (cudaMemcpyAsync, cudaMemcpy2D[Async]; the 2D form copies `height`
  // rows of `width` bytes, `toPitch`/`fromPitch` bytes apart). Host memory (the source of a
  // host-to-device copy, the destination of a device-to-host one) is by default the caller's
  // staging buffer, valid only during the call: for those kinds the executor returns after `stream`
  // has finished the copy. With `hostPersists` (the application's pinned memory in the data region,
  // registered with registerHostMemory) the copy is only enqueued, as device-to-device copies are.
  virtual cudaError_t copyOnStream(void* to, const void* from, std::size_t bytes, cudaMemcpyKind kind,
                                   cudaStream_t stream, bool hostPersists = false) = 0;
  virtual cudaError_t copy2DOnStream(void* to, std::size_t toPitch, const void* from, std::size_t fromPitch,
                                     std::size_t width, std::size_t height, cudaMemcpyKind kind,
                                     cudaStream_t stream) = 0;
  virtual cudaError_t deviceProperties(cudaDeviceProp* prop, int device) = 0;

  // Page-locks host memory the worker maps (a data-region segment, a staging buffer) so that copies
  // from and to it are single DMAs (cudaHostRegister); unregisterHostMemory undoes it before the
  // memory is unmapped.
  virtual cudaError_t registerHostMemory(void* base, std::size_t bytes) = 0;
  virtual cudaError_t unregisterHostMemory(void* base) = 0;

  // Modules and kernels (backend/src/module_cache.hpp keeps the session's tables and validates).
  // `image` is a checked fatbin (flyt/api/fatbin.hpp) that the caller keeps alive until
  // unloadModule. The layout is every parameter's {offset, size} in the kernel's parameter block,
  // in order. `params` of launchKernel points at one value per parameter, at those offsets.
  struct ParamLayout {
    std::uint32_t offset;
    std::uint32_t size;
  };
  virtual cudaError_t loadModule(std::span<const std::byte> image, cudaLibrary_t* module) = 0;
  virtual cudaError_t unloadModule(cudaLibrary_t module) = 0;
  virtual cudaError_t getKernel(cudaLibrary_t module, const char* name, cudaKernel_t* kernel,
                                std::vector<ParamLayout>* layout) = 0;
  virtual cudaError_t launchKernel(cudaKernel_t kernel, dim3 grid, dim3 block, void** params,
                                   std::size_t sharedMem, cudaStream_t stream) = 0;
  // A kernel launch with what cudaLaunchKernelExC/cudaLaunchCooperativeKernel add: a cooperative
  // launch, a thread-block cluster (`cluster` all zero: none).
  struct LaunchOptions {
    bool cooperative = false;
    dim3 cluster{0, 0, 0};
  };
  virtual cudaError_t launchKernelEx(cudaKernel_t kernel, dim3 grid, dim3 block, void** params,
                                     std::size_t sharedMem, cudaStream_t stream, const LaunchOptions& options) = 0;
  // cudaFuncGetAttributes, cudaFuncSetAttribute and cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags
  // of a kernel from getKernel.
  virtual cudaError_t kernelAttributes(cudaKernel_t kernel, cudaFuncAttributes* attributes) = 0;
  virtual cudaError_t setKernelAttribute(cudaKernel_t kernel, cudaFuncAttribute attribute, int value) = 0;
  virtual cudaError_t occupancy(int* blocks, cudaKernel_t kernel, int blockSize, std::size_t dynamicSharedMem,
                                unsigned flags) = 0;
  // cudaDeviceReset. The caller has unloaded every module and released every allocation, stream and
  // event of the session first (so that a reset that cannot destroy the context, as under a green
  // context, still leaves nothing of the session's behind).
  virtual cudaError_t deviceReset() = 0;

  // A module's __device__/__constant__ variable. `registeredBytes` is its size as the application
  // registered it (the stand-in, which has no module to read, sizes the variable by it).
  virtual cudaError_t getGlobal(cudaLibrary_t module, const char* name, std::size_t registeredBytes,
                                void** address, std::size_t* bytes) = 0;
};

// The GPU through NVIDIA's runtime, with the SM share of `limits` applied (a green context of the
// granted SMs made current on the calling thread, which must be the one that runs every call; under
// MPS nothing but the reported count). kUnavailable: there is no GPU (no driver, no device), the
// message says why; kUnsupported: there is one but the SM share cannot be set up on it (an old
// driver): the session must be refused, not run on the whole GPU.
[[nodiscard]] transport::Result<std::unique_ptr<Executor>> makeCudaExecutor(const SessionLimits& limits);

// The host-memory stand-in: device memory is host memory, kernels are not executed. A test double
// for machines without a GPU (CI); every session that uses it logs so at warn level. It reports
// kStandInMultiprocessors SMs and a share of them as a green context (granularity 8, as on
// Hopper) or MPS would.
inline constexpr std::uint32_t kStandInMultiprocessors = 132;
[[nodiscard]] std::unique_ptr<Executor> makeStandInExecutor(const SessionLimits& limits);

}  // namespace flyt::backend
