// The GPU stand-in: a test double for machines without a GPU. "Device" memory is host memory
// (aligned_alloc), streams and events are host objects, everything completes immediately, and
// kernels are not executed. It exists so that the whole client <-> transport <-> worker path runs
// in CI; it is never chosen silently (the worker logs it at warn level).
//
// Kernels are looked up in the module's cubins (cubin_layout.hpp gives their parameter layouts) and
// launches are accepted but not run. With FLYT_STANDIN_TRACE_LAUNCHES=1 in the worker's environment
// each prints one line to the worker's stdout, which travels to the application's stdout with the
// next reply, so a test can check how arguments were packed:
//   flyt-standin: launch <mangled name> grid=(x,y,z) block=(x,y,z) shmem=<bytes> params=<hex>
// `params` is the kernel's whole parameter block, two hex digits a byte, bytes in order; gaps
// between parameters are zero, padding inside a struct is what the application passed.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <map>
#include <memory>
#include <set>
#include <string>

#include <fmt/format.h>

#include <cstdio>
#include <optional>

#include "cubin_layout.hpp"
#include "flyt/backend/executor.hpp"
#include "flyt/transport/log.hpp"

namespace flyt::backend {
namespace {

spdlog::logger& log() { return flyt::logger("worker"); }

constexpr std::size_t kTotalMemory = 16ULL << 30;  // what cudaMemGetInfo reports
constexpr std::size_t kAlignment = 256;             // cudaMalloc's documented alignment

struct StandInKernel {
  std::string name;
  KernelLayout layout;
};

struct StandInModule {
  std::size_t bytes = 0;
  std::span<const std::byte> image;  // the cache keeps it alive until unloadModule
  std::optional<std::expected<KernelLayouts, CubinLayoutError>> layouts;  // read at the first lookup
  std::map<std::string, std::unique_ptr<StandInKernel>, std::less<>> kernels;
  std::map<std::string, std::pair<void*, std::size_t>, std::less<>> globals;  // name -> (memory, size)
};

constexpr int kStandInRegisters = 32;                // per thread, for kernel attributes and occupancy
constexpr int kSharedPerMultiprocessor = 228 << 10;  // sm_90

struct StandInKernelSettings {  // what cudaFuncSetAttribute changed
  int maxDynamicSharedBytes = 48 << 10;
  int carveout = -1;
};

struct StandInEvent {
  std::chrono::steady_clock::time_point recorded{};
  bool everRecorded = false;
};

class StandInExecutor final : public Executor {
 public:
  // The share a green context (granularity 8, as on compute capability 9.x) or MPS would give.
  explicit StandInExecutor(const SessionLimits& limits)
      : m_grantedSms(!limits.sharesSms() ? 0
                     : limits.mps        ? mpsSmCount(kStandInMultiprocessors, limits.smPercent)
                                         : greenContextSmCount(kStandInMultiprocessors, limits.smPercent, 8)) {}
  std::uint32_t multiprocessorGrant() const override { return m_grantedSms; }

  ~StandInExecutor() override {
    for (auto& [pointer, bytes] : m_allocations) std::free(pointer);
    for (auto& [handle, module] : m_modules) {
      for (auto& [name, global] : module->globals) std::free(global.first);
    }
  }

  std::string_view describe() const override {
    return "stand-in (host memory; test double, no GPU)";
  }

  cudaError_t cudaGetDeviceCount(int* count) override {
    *count = 1;
    return cudaSuccess;
  }
  cudaError_t cudaSetDevice(int device) override {
    return device == 0 ? cudaSuccess : cudaErrorInvalidDevice;
  }
  cudaError_t cudaGetDevice(int* device) override {
    *device = 0;
    return cudaSuccess;
  }
  cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) override {
    if (device != 0) return cudaErrorInvalidDevice;
    switch (attr) {
      case cudaDevAttrMultiProcessorCount: *value = int(kStandInMultiprocessors); break;
      case cudaDevAttrWarpSize: *value = 32; break;
      case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
      case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
      case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
      case cudaDevAttrUnifiedAddressing: *value = 1; break;
      default: *value = 0; break;
    }
    return cudaSuccess;
  }
  cudaError_t cudaDeviceSynchronize() override { return cudaSuccess; }
  cudaError_t cudaDeviceSetLimit(enum cudaLimit limit, size_t value) override {
    m_limits[limit] = value;
    return cudaSuccess;
  }
  cudaError_t cudaDeviceGetLimit(size_t* value, enum cudaLimit limit) override {
    auto it = m_limits.find(limit);
    *value = it == m_limits.end() ? 0 : it->second;
    return cudaSuccess;
  }
  cudaError_t cudaSetDeviceFlags(unsigned int flags) override {
    m_flags = flags;
    return cudaSuccess;
  }
  cudaError_t cudaGetDeviceFlags(unsigned int* flags) override {
    *flags = m_flags;
    return cudaSuccess;
  }
  cudaError_t cudaDeviceGetStreamPriorityRange(int* least, int* greatest) override {
    *least = 0;
    *greatest = -5;
    return cudaSuccess;
  }
  cudaError_t cudaDriverGetVersion(int* version) override {
    *version = CUDART_VERSION;
    return cudaSuccess;
  }

  cudaError_t cudaMalloc(void** devPtr, size_t size) override {
    if (size == 0) {
      *devPtr = nullptr;
      return cudaSuccess;
    }
    if (size > kTotalMemory - m_used) return cudaErrorMemoryAllocation;
    void* pointer = std::aligned_alloc(kAlignment, (size + kAlignment - 1) / kAlignment * kAlignment);
    if (pointer == nullptr) return cudaErrorMemoryAllocation;
    m_allocations[pointer] = size;
    m_used += size;
    *devPtr = pointer;
    return cudaSuccess;
  }
  cudaError_t cudaFree(void* devPtr) override {
    if (devPtr == nullptr) return cudaSuccess;
    auto it = m_allocations.find(devPtr);
    if (it == m_allocations.end()) return cudaErrorInvalidValue;
    m_used -= it->second;
    std::free(it->first);
    m_allocations.erase(it);
    return cudaSuccess;
  }
  cudaError_t cudaMallocPitch(void** devPtr, size_t* pitch, size_t width, size_t height) override {
    *pitch = (width + kAlignment - 1) / kAlignment * kAlignment;
    return cudaMalloc(devPtr, *pitch * height);
  }
  // Like the GPU: pitch = width rounded up to the alignment, rows * slices of it.
  cudaError_t cudaMalloc3D(cudaPitchedPtr* made, cudaExtent extent) override {
    const std::size_t pitch = (extent.width + kAlignment - 1) / kAlignment * kAlignment;
    if (extent.height != 0 && extent.depth != 0 && pitch > kTotalMemory / extent.height / extent.depth) {
      return cudaErrorMemoryAllocation;
    }
    void* pointer = nullptr;
    if (auto error = cudaMalloc(&pointer, pitch * extent.height * extent.depth); error != cudaSuccess) return error;
    *made = cudaPitchedPtr{pointer, pitch, extent.width, extent.height};
    return cudaSuccess;
  }
  cudaError_t cudaMallocAsync(void** devPtr, size_t size, cudaStream_t) override {
    return cudaMalloc(devPtr, size);
  }
  cudaError_t cudaFreeAsync(void* devPtr, cudaStream_t) override { return cudaFree(devPtr); }
  cudaError_t cudaMemGetInfo(size_t* free, size_t* total) override {
    *free = kTotalMemory - m_used;
    *total = kTotalMemory;
    return cudaSuccess;
  }
  cudaError_t cudaMemset(void* devPtr, int value, size_t count) override {
    std::memset(devPtr, value, count);
    return cudaSuccess;
  }
  cudaError_t cudaMemsetAsync(void* devPtr, int value, size_t count, cudaStream_t) override {
    return cudaMemset(devPtr, value, count);
  }
  cudaError_t cudaMemset2D(void* devPtr, size_t pitch, int value, size_t width, size_t height) override {
    // Zero-width rows touch nothing: do not walk 2^57 of them (found by the dispatch fuzzer).
    if (width == 0) return cudaSuccess;
    for (size_t row = 0; row < height; ++row) {
      std::memset(static_cast<char*>(devPtr) + row * pitch, value, width);
    }
    return cudaSuccess;
  }
  cudaError_t cudaMemset2DAsync(void* devPtr, size_t pitch, int value, size_t width, size_t height,
                                cudaStream_t) override {
    return cudaMemset2D(devPtr, pitch, value, width, height);
  }

  cudaError_t cudaStreamCreate(cudaStream_t* stream) override { return newStream(stream); }
  cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) override {
    return newStream(stream);
  }
  cudaError_t cudaStreamCreateWithPriority(cudaStream_t* stream, unsigned int, int) override {
    return newStream(stream);
  }
  cudaError_t cudaStreamDestroy(cudaStream_t stream) override {
    return m_streams.erase(stream) == 1 ? cudaSuccess : cudaErrorInvalidResourceHandle;
  }
  cudaError_t cudaStreamSynchronize(cudaStream_t) override { return cudaSuccess; }
  cudaError_t cudaStreamQuery(cudaStream_t) override { return cudaSuccess; }
  cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned int) override {
    return cudaSuccess;
  }

  cudaError_t cudaEventCreate(cudaEvent_t* event) override { return newEvent(event); }
  cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) override {
    return newEvent(event);
  }
  cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) override {
    auto* e = find(event);
    if (e == nullptr) return cudaErrorInvalidResourceHandle;
    e->recorded = std::chrono::steady_clock::now();
    e->everRecorded = true;
    return cudaSuccess;
  }
  cudaError_t cudaEventSynchronize(cudaEvent_t event) override {
    return find(event) != nullptr ? cudaSuccess : cudaErrorInvalidResourceHandle;
  }
  cudaError_t cudaEventQuery(cudaEvent_t event) override { return cudaEventSynchronize(event); }
  cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) override {
    auto* a = find(start);
    auto* b = find(end);
    if (a == nullptr || b == nullptr) return cudaErrorInvalidResourceHandle;
    if (!a->everRecorded || !b->everRecorded) return cudaErrorInvalidResourceHandle;
    *ms = std::chrono::duration<float, std::milli>(b->recorded - a->recorded).count();
    return cudaSuccess;
  }
  cudaError_t cudaEventDestroy(cudaEvent_t event) override {
    return m_events.erase(event) == 1 ? cudaSuccess : cudaErrorInvalidResourceHandle;
  }

  cudaError_t copyToDevice(void* device, const void* host, std::size_t bytes) override {
    std::memcpy(device, host, bytes);
    return cudaSuccess;
  }
  cudaError_t copyToHost(void* host, const void* device, std::size_t bytes) override {
    std::memcpy(host, device, bytes);
    return cudaSuccess;
  }
  cudaError_t copyOnDevice(void* to, const void* from, std::size_t bytes) override {
    std::memmove(to, from, bytes);
    return cudaSuccess;
  }
  // Everything completes at once, so the stream's order and the staging contract hold trivially.
  cudaError_t copyOnStream(void* to, const void* from, std::size_t bytes, cudaMemcpyKind,
                           cudaStream_t, bool) override {
    std::memmove(to, from, bytes);
    return cudaSuccess;
  }
  // Host memory needs no page-locking where no DMA engine reads it.
  cudaError_t registerHostMemory(void*, std::size_t) override { return cudaSuccess; }
  cudaError_t unregisterHostMemory(void*) override { return cudaSuccess; }
  cudaError_t copy2DOnStream(void* to, std::size_t toPitch, const void* from, std::size_t fromPitch,
                             std::size_t width, std::size_t height, cudaMemcpyKind, cudaStream_t) override {
    if (width == 0) return cudaSuccess;  // as cudaMemset2D: nothing to copy, however many rows
    for (std::size_t row = 0; row < height; ++row) {
      std::memmove(static_cast<char*>(to) + row * toPitch, static_cast<const char*>(from) + row * fromPitch,
                   width);
    }
    return cudaSuccess;
  }
  cudaError_t deviceProperties(cudaDeviceProp* prop, int device) override {
    if (device != 0) return cudaErrorInvalidDevice;
    *prop = cudaDeviceProp{};
    std::strncpy(prop->name, "Flyt GPU stand-in (test double)", sizeof prop->name - 1);
    prop->totalGlobalMem = kTotalMemory;
    prop->multiProcessorCount = int(kStandInMultiprocessors);
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    prop->major = 9;
    prop->minor = 0;
    prop->unifiedAddressing = 1;
    prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
    prop->maxThreadsDim[2] = 64;
    prop->maxGridSize[0] = 0x7fffffff;
    prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
    prop->sharedMemPerBlock = 48 << 10;
    return cudaSuccess;
  }

  // Modules are accepted (the cache has checked the fatbin's header and hash) but their code is
  // never run: kernels are found in the cubins, launches are printed. Variables are host memory of
  // the size the application registered, zero-initialised, so symbol copies round-trip.
  cudaError_t loadModule(std::span<const std::byte> image, cudaLibrary_t* module) override {
    auto owned = std::make_unique<StandInModule>();
    owned->bytes = image.size();
    owned->image = image;
    *module = reinterpret_cast<cudaLibrary_t>(owned.get());
    m_modules.emplace(*module, std::move(owned));
    return cudaSuccess;
  }
  cudaError_t unloadModule(cudaLibrary_t module) override {
    auto it = m_modules.find(module);
    if (it == m_modules.end()) return cudaErrorInvalidResourceHandle;
    for (auto& [name, global] : it->second->globals) std::free(global.first);
    for (auto& [name, kernel] : it->second->kernels) {
      m_kernels.erase(reinterpret_cast<cudaKernel_t>(kernel.get()));
      m_kernelSettings.erase(reinterpret_cast<cudaKernel_t>(kernel.get()));  // the address may come back
    }
    m_modules.erase(it);
    return cudaSuccess;
  }
  cudaError_t getKernel(cudaLibrary_t module, const char* name, cudaKernel_t* kernel,
                        std::vector<ParamLayout>* layout) override {
    auto it = m_modules.find(module);
    if (it == m_modules.end()) return cudaErrorInvalidResourceHandle;
    auto& owner = *it->second;
    if (auto known = owner.kernels.find(name); known != owner.kernels.end()) {
      *kernel = reinterpret_cast<cudaKernel_t>(known->second.get());
      *layout = known->second->layout.params;
      return cudaSuccess;
    }
    if (!owner.layouts) owner.layouts = fatbinKernelLayouts(owner.image);
    if (!*owner.layouts) {
      log().warn("stand-in: kernel {}: {}", name, flyt::backend::describe(owner.layouts->error()));
      const auto error = owner.layouts->error();
      return error == CubinLayoutError::kCompressed || error == CubinLayoutError::kNoCubin
                 ? cudaErrorNotSupported
                 : cudaErrorInvalidKernelImage;
    }
    auto found = owner.layouts->value().find(name);
    if (found == owner.layouts->value().end()) return cudaErrorSymbolNotFound;
    if (!found->second.complete) {
      log().warn("stand-in: kernel {}: its cubin gives no per-parameter layout ({} parameter bytes)", name,
                 found->second.paramBytes);
      return cudaErrorNotSupported;
    }
    auto owned = std::make_unique<StandInKernel>(StandInKernel{found->first, found->second});
    *kernel = reinterpret_cast<cudaKernel_t>(owned.get());
    *layout = owned->layout.params;
    m_kernels.emplace(*kernel, owned.get());
    owner.kernels.emplace(found->first, std::move(owned));
    return cudaSuccess;
  }
  // Accepted and printed, not run (see the top of the file).
  cudaError_t launchKernel(cudaKernel_t kernel, dim3 grid, dim3 block, void** params, std::size_t sharedMem,
                           cudaStream_t) override {
    auto it = m_kernels.find(kernel);
    if (it == m_kernels.end()) return cudaErrorInvalidResourceHandle;
    const auto& k = *it->second;
    if (!m_traceLaunches) return cudaSuccess;
    std::vector<unsigned char> bytes(k.layout.paramBytes);
    for (std::size_t i = 0; i < k.layout.params.size(); ++i) {
      const auto& param = k.layout.params[i];
      std::memcpy(bytes.data() + param.offset, params[i], param.size);
    }
    std::string line = fmt::format("flyt-standin: launch {} grid=({},{},{}) block=({},{},{}) shmem={} params=",
                                   k.name, grid.x, grid.y, grid.z, block.x, block.y, block.z, sharedMem);
    for (unsigned char byte : bytes) line += fmt::format("{:02x}", byte);
    line += '\n';
    std::fputs(line.c_str(), stdout);
    return cudaSuccess;
  }
  // Accepted and printed as launchKernel (the line does not show the options).
  cudaError_t launchKernelEx(cudaKernel_t kernel, dim3 grid, dim3 block, void** params, std::size_t sharedMem,
                             cudaStream_t stream, const LaunchOptions&) override {
    return launchKernel(kernel, grid, block, params, sharedMem, stream);
  }
  // Kernel queries answer as an sm_90 device would for a small kernel: 32 registers, no static
  // shared memory, 1024 threads; what cudaFuncSetAttribute set is reported back.
  cudaError_t kernelAttributes(cudaKernel_t kernel, cudaFuncAttributes* attributes) override {
    const auto& set = m_kernelSettings[kernel];
    *attributes = cudaFuncAttributes{};
    attributes->maxThreadsPerBlock = 1024;
    attributes->numRegs = kStandInRegisters;
    attributes->ptxVersion = 90;
    attributes->binaryVersion = 90;
    attributes->maxDynamicSharedSizeBytes = set.maxDynamicSharedBytes;
    attributes->preferredShmemCarveout = set.carveout;
    return cudaSuccess;
  }
  cudaError_t setKernelAttribute(cudaKernel_t kernel, cudaFuncAttribute attribute, int value) override {
    auto& set = m_kernelSettings[kernel];
    switch (attribute) {
      case cudaFuncAttributeMaxDynamicSharedMemorySize:
        if (value < 0 || value > kSharedPerMultiprocessor) return cudaErrorInvalidValue;
        set.maxDynamicSharedBytes = value;
        return cudaSuccess;
      case cudaFuncAttributePreferredSharedMemoryCarveout:
        if (value < -1 || value > 100) return cudaErrorInvalidValue;
        set.carveout = value;
        return cudaSuccess;
      default: return cudaErrorInvalidValue;
    }
  }
  // Blocks per multiprocessor, limited by threads (2048), blocks (32), registers (64K) and shared
  // memory (228 KiB), as the occupancy calculator does for whole warps.
  cudaError_t occupancy(int* blocks, cudaKernel_t kernel, int blockSize, std::size_t dynamicSharedMem,
                        unsigned) override {
    if (blockSize <= 0) return cudaErrorInvalidValue;
    if (blockSize > 1024 || dynamicSharedMem > std::size_t(m_kernelSettings[kernel].maxDynamicSharedBytes)) {
      *blocks = 0;
      return cudaSuccess;
    }
    const int threads = (blockSize + 31) / 32 * 32;
    int limit = std::min(32, 2048 / threads);
    limit = std::min(limit, 65536 / (threads * kStandInRegisters));
    if (dynamicSharedMem > 0) limit = std::min<int>(limit, kSharedPerMultiprocessor / int(dynamicSharedMem));
    *blocks = limit;
    return cudaSuccess;
  }
  cudaError_t deviceReset() override {
    for (auto& [pointer, bytes] : m_allocations) std::free(pointer);
    m_allocations.clear();
    m_used = 0;
    m_streams.clear();
    m_events.clear();
    m_limits.clear();
    m_flags = 0;
    m_kernelSettings.clear();
    return cudaSuccess;
  }

  cudaError_t getGlobal(cudaLibrary_t module, const char* name, std::size_t registeredBytes, void** address,
                        std::size_t* bytes) override {
    auto it = m_modules.find(module);
    if (it == m_modules.end()) return cudaErrorInvalidResourceHandle;
    if (registeredBytes == 0 || registeredBytes > kTotalMemory) return cudaErrorInvalidSymbol;
    auto& globals = it->second->globals;
    auto found = globals.find(name);
    if (found == globals.end()) {
      const std::size_t rounded = (registeredBytes + kAlignment - 1) / kAlignment * kAlignment;
      void* pointer = std::aligned_alloc(kAlignment, rounded);
      if (pointer == nullptr) return cudaErrorMemoryAllocation;
      std::memset(pointer, 0, rounded);
      found = globals.emplace(name, std::pair{pointer, registeredBytes}).first;
    }
    *address = found->second.first;
    *bytes = found->second.second;
    return cudaSuccess;
  }

 private:
  cudaError_t newStream(cudaStream_t* stream) {
    auto owned = std::make_unique<char>();
    *stream = reinterpret_cast<cudaStream_t>(owned.get());
    m_streams.emplace(*stream, std::move(owned));
    return cudaSuccess;
  }
  cudaError_t newEvent(cudaEvent_t* event) {
    auto owned = std::make_unique<StandInEvent>();
    *event = reinterpret_cast<cudaEvent_t>(owned.get());
    m_events.emplace(*event, std::move(owned));
    return cudaSuccess;
  }
  StandInEvent* find(cudaEvent_t event) {
    auto it = m_events.find(event);
    return it == m_events.end() ? nullptr : it->second.get();
  }

  std::uint32_t m_grantedSms;
  std::map<void*, std::size_t> m_allocations;
  std::size_t m_used = 0;
  std::map<cudaLimit, std::size_t> m_limits;
  unsigned int m_flags = 0;
  std::map<cudaStream_t, std::unique_ptr<char>> m_streams;
  std::map<cudaEvent_t, std::unique_ptr<StandInEvent>> m_events;
  std::map<cudaLibrary_t, std::unique_ptr<StandInModule>> m_modules;
  std::map<cudaKernel_t, const StandInKernel*> m_kernels;  // owned by their module
  const bool m_traceLaunches = [] {
    const char* trace = std::getenv("FLYT_STANDIN_TRACE_LAUNCHES");
    return trace != nullptr && std::string_view(trace) == "1";
  }();
  std::map<cudaKernel_t, StandInKernelSettings> m_kernelSettings;
};

}  // namespace

std::unique_ptr<Executor> makeStandInExecutor(const SessionLimits& limits) {
  return std::make_unique<StandInExecutor>(limits);
}

}  // namespace flyt::backend
