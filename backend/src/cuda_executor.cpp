// The GPU executor: NVIDIA's runtime (linked statically into the worker), called with the decoded
// arguments. The runtime loads the driver (libcuda.so.1) itself on first use, so the worker starts on
// machines without a driver and this factory reports why there is no GPU instead.
//
// SM share: with SessionLimits::wantsGreenContext() the executor makes a green context of the
// granted SMs current on the worker's one CUDA thread (green_context.hpp) before any other CUDA
// work, so the primary context is never used. Under MPS, the daemon applies
// CUDA_MPS_ACTIVE_THREAD_PERCENTAGE (set by the node) and the executor only reports the share.
// cudaDeviceReset under a green context does not destroy it (the runtime's reset is the primary
// context's, and recreating the partition could land on other SMs): the dispatcher has already
// released every allocation, stream, event and module of the session, and the reset synchronises.
#include <cuda.h>  // driver types only: the driver's functions come from cudaGetDriverEntryPointByVersion
#include <fmt/format.h>

#include <optional>
#include <string>

#include "flyt/backend/executor.hpp"
#include "green_context.hpp"

namespace flyt::backend {
namespace {

// cuKernelGetParamInfo (CUDA 12.4): no runtime counterpart, and the worker does not link libcuda.
using KernelGetParamInfo = CUresult (*)(CUkernel, std::size_t, std::size_t*, std::size_t*);

class CudaExecutor final : public Executor {
 public:
  CudaExecutor(std::string description, std::optional<GreenContext> green, std::uint32_t grantedSms)
      : m_description(std::move(description)), m_green(green), m_grantedSms(grantedSms) {}

  std::string_view describe() const override { return m_description; }
  std::uint32_t multiprocessorGrant() const override { return m_grantedSms; }

#define FLYT_PASS_THROUGH(name, params, args) \
  cudaError_t name params override { return ::name args; }
  FLYT_API_GENERATED_SIGNATURES(FLYT_PASS_THROUGH)
#undef FLYT_PASS_THROUGH

  cudaError_t copyToDevice(void* device, const void* host, std::size_t bytes) override {
    return ::cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice);
  }
  cudaError_t copyToHost(void* host, const void* device, std::size_t bytes) override {
    return ::cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost);
  }
  cudaError_t copyOnDevice(void* to, const void* from, std::size_t bytes) override {
    return ::cudaMemcpy(to, from, bytes, cudaMemcpyDeviceToDevice);
  }
  // Unless it persists, the host side is a staging buffer of the dispatcher's: wait until the stream
  // has used it.
  cudaError_t copyOnStream(void* to, const void* from, std::size_t bytes, cudaMemcpyKind kind,
                           cudaStream_t stream, bool hostPersists) override {
    const cudaError_t queued = ::cudaMemcpyAsync(to, from, bytes, kind, stream);
    if (queued != cudaSuccess || hostPersists || kind == cudaMemcpyDeviceToDevice) return queued;
    return ::cudaStreamSynchronize(stream);
  }
  cudaError_t copy2DOnStream(void* to, std::size_t toPitch, const void* from, std::size_t fromPitch,
                             std::size_t width, std::size_t height, cudaMemcpyKind kind,
                             cudaStream_t stream) override {
    const cudaError_t queued = ::cudaMemcpy2DAsync(to, toPitch, from, fromPitch, width, height, kind, stream);
    if (queued != cudaSuccess || kind == cudaMemcpyDeviceToDevice) return queued;
    return ::cudaStreamSynchronize(stream);
  }
  cudaError_t deviceProperties(cudaDeviceProp* prop, int device) override {
    return ::cudaGetDeviceProperties(prop, device);
  }
  // Portable: registered for every context, as cudaMallocHost memory is. Mapped: the device can
  // address it (the basis for cudaHostGetDevicePointer).
  cudaError_t registerHostMemory(void* base, std::size_t bytes) override {
    return ::cudaHostRegister(base, bytes, cudaHostRegisterPortable | cudaHostRegisterMapped);
  }
  cudaError_t unregisterHostMemory(void* base) override { return ::cudaHostUnregister(base); }

  cudaError_t loadModule(std::span<const std::byte> image, cudaLibrary_t* module) override {
    return ::cudaLibraryLoadData(module, image.data(), nullptr, nullptr, 0, nullptr, nullptr, 0);
  }
  cudaError_t unloadModule(cudaLibrary_t module) override { return ::cudaLibraryUnload(module); }

  cudaError_t getKernel(cudaLibrary_t module, const char* name, cudaKernel_t* kernel,
                        std::vector<ParamLayout>* layout) override {
    if (auto error = ::cudaLibraryGetKernel(kernel, module, name); error != cudaSuccess) return error;
    if (m_paramInfo == nullptr) {
      void* entry = nullptr;
      cudaDriverEntryPointQueryResult status{};
      const auto error = ::cudaGetDriverEntryPointByVersion("cuKernelGetParamInfo", &entry, 12040,
                                                            cudaEnableDefault, &status);
      if (error != cudaSuccess || status != cudaDriverEntryPointSuccess || entry == nullptr) {
        return error != cudaSuccess ? error : cudaErrorNotSupported;  // a driver older than 12.4
      }
      m_paramInfo = reinterpret_cast<KernelGetParamInfo>(entry);
    }
    layout->clear();
    // No count query exists: step the index until the driver says it is past the last parameter.
    for (std::size_t index = 0;; ++index) {
      std::size_t offset = 0, size = 0;
      const CUresult result = m_paramInfo(reinterpret_cast<CUkernel>(*kernel), index, &offset, &size);
      if (result == CUDA_ERROR_INVALID_VALUE) break;
      if (result != CUDA_SUCCESS) return cudaErrorInvalidDeviceFunction;
      layout->push_back({static_cast<std::uint32_t>(offset), static_cast<std::uint32_t>(size)});
    }
    return cudaSuccess;
  }

  cudaError_t launchKernel(cudaKernel_t kernel, dim3 grid, dim3 block, void** params, std::size_t sharedMem,
                           cudaStream_t stream) override {
    // cudaLaunchKernel accepts a cudaKernel_t cast to a function pointer (cuda_runtime_api.h).
    return ::cudaLaunchKernel(reinterpret_cast<const void*>(kernel), grid, block, params, sharedMem, stream);
  }

  cudaError_t launchKernelEx(cudaKernel_t kernel, dim3 grid, dim3 block, void** params, std::size_t sharedMem,
                             cudaStream_t stream, const LaunchOptions& options) override {
    const auto* func = reinterpret_cast<const void*>(kernel);
    const bool clustered = options.cluster.x != 0;
    if (options.cooperative && !clustered) {
      return ::cudaLaunchCooperativeKernel(func, grid, block, params, sharedMem, stream);
    }
    cudaLaunchAttribute attributes[2]{};
    cudaLaunchConfig_t config{grid, block, sharedMem, stream, attributes, 0};
    if (options.cooperative) {
      attributes[config.numAttrs].id = cudaLaunchAttributeCooperative;
      attributes[config.numAttrs++].val.cooperative = 1;
    }
    if (clustered) {
      attributes[config.numAttrs].id = cudaLaunchAttributeClusterDimension;
      attributes[config.numAttrs].val.clusterDim.x = options.cluster.x;
      attributes[config.numAttrs].val.clusterDim.y = options.cluster.y;
      attributes[config.numAttrs++].val.clusterDim.z = options.cluster.z;
    }
    return ::cudaLaunchKernelExC(&config, func, params);
  }
  cudaError_t kernelAttributes(cudaKernel_t kernel, cudaFuncAttributes* attributes) override {
    return ::cudaFuncGetAttributes(attributes, reinterpret_cast<const void*>(kernel));
  }
  cudaError_t setKernelAttribute(cudaKernel_t kernel, cudaFuncAttribute attribute, int value) override {
    return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attribute, value);
  }
  cudaError_t occupancy(int* blocks, cudaKernel_t kernel, int blockSize, std::size_t dynamicSharedMem,
                        unsigned flags) override {
    return ::cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(blocks, reinterpret_cast<const void*>(kernel),
                                                                    blockSize, dynamicSharedMem, flags);
  }
  // Recreates the primary context at once, as at start: the session's next module load needs it.
  cudaError_t deviceReset() override {
    if (m_green) return ::cudaDeviceSynchronize();
    if (const cudaError_t reset = ::cudaDeviceReset(); reset != cudaSuccess) return reset;
    return ::cudaFree(nullptr);
  }

  cudaError_t getGlobal(cudaLibrary_t module, const char* name, std::size_t /*registeredBytes*/, void** address,
                        std::size_t* bytes) override {
    return ::cudaLibraryGetGlobal(address, bytes, module, name);
  }

 private:
  std::string m_description;
  std::optional<GreenContext> m_green;  // kept for the process's life: the worker's one session runs on it
  std::uint32_t m_grantedSms;
  KernelGetParamInfo m_paramInfo = nullptr;
};

}  // namespace

transport::Result<std::unique_ptr<Executor>> makeCudaExecutor(const SessionLimits& limits) {
  using transport::Errc;
  int count = 0;
  const cudaError_t error = ::cudaGetDeviceCount(&count);
  if (error != cudaSuccess || count == 0) {
    return transport::fail(Errc::kUnavailable,
                           error != cudaSuccess ? fmt::format("cudaGetDeviceCount: {} ({})", ::cudaGetErrorName(error),
                                                              ::cudaGetErrorString(error))
                                                : std::string("the CUDA driver reports no device"));
  }
  // The partition before anything creates the primary context: the runtime then adopts it.
  std::optional<GreenContext> green;
  if (limits.wantsGreenContext()) {
    auto made = makeGreenContext(0, limits.smPercent);
    if (!made) {
      return transport::fail(Errc::kUnsupported,
                             fmt::format("cannot confine the session to {} % of the SMs: {}", limits.smPercent,
                                         made.error().message));
    }
    green = *made;
  }
  // Create the context now: loading modules and reading kernel layouts need a current context, and
  // the session's first call should not pay for it.
  if (const cudaError_t init = ::cudaFree(nullptr); init != cudaSuccess) {
    return transport::fail(Errc::kUnavailable, fmt::format("creating the CUDA context: {}", ::cudaGetErrorName(init)));
  }
  cudaDeviceProp prop{};
  (void)::cudaGetDeviceProperties(&prop, 0);
  std::uint32_t granted = 0;
  std::string share;
  if (green) {
    granted = green->smCount;
    share = fmt::format(", green context of {} of {} SMs", green->smCount, green->deviceSmCount);
  } else if (limits.sharesSms()) {
    // Under an active thread percentage the runtime already reports the SMs MPS gives the client
    // (measured on an H200, CUDA 13 driver: 32 of 132 at 25 %, 66 at 50 %): report that.
    granted = static_cast<std::uint32_t>(prop.multiProcessorCount);
    share = fmt::format(", MPS active thread percentage {} ({} SMs)", limits.smPercent, granted);
  }
  return std::unique_ptr<Executor>(std::make_unique<CudaExecutor>(
      fmt::format("cuda ({}, {} device(s){})", prop.name, count, share), green, granted));
}

}  // namespace flyt::backend
