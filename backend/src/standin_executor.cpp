// The GPU stand-in: a test double for machines without a GPU. "Device" memory is host memory
// (aligned_alloc), streams and events are host objects, everything completes immediately, and
// kernels are not executed. It exists so that the whole client <-> transport <-> worker path runs
// in CI; it is never chosen silently (the worker logs it at warn level).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "flyt/backend/executor.hpp"

namespace flyt::backend {
namespace {

constexpr std::size_t kTotalMemory = 16ULL << 30;  // what cudaMemGetInfo reports
constexpr std::size_t kAlignment = 256;             // cudaMalloc's documented alignment

struct StandInModule {
  std::size_t bytes = 0;
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
      case cudaDevAttrMultiProcessorCount: *value = 4; break;
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
                           cudaStream_t) override {
    std::memmove(to, from, bytes);
    return cudaSuccess;
  }
  cudaError_t copy2DOnStream(void* to, std::size_t toPitch, const void* from, std::size_t fromPitch,
                             std::size_t width, std::size_t height, cudaMemcpyKind, cudaStream_t) override {
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
    prop->multiProcessorCount = 4;
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
  // never run: kernels cannot be looked up. Variables are host memory of the size the application
  // registered, zero-initialised, so symbol copies round-trip.
  cudaError_t loadModule(std::span<const std::byte> image, cudaLibrary_t* module) override {
    auto owned = std::make_unique<StandInModule>();
    owned->bytes = image.size();
    *module = reinterpret_cast<cudaLibrary_t>(owned.get());
    m_modules.emplace(*module, std::move(owned));
    return cudaSuccess;
  }
  cudaError_t unloadModule(cudaLibrary_t module) override {
    auto it = m_modules.find(module);
    if (it == m_modules.end()) return cudaErrorInvalidResourceHandle;
    for (auto& [name, global] : it->second->globals) std::free(global.first);
    m_modules.erase(it);
    return cudaSuccess;
  }
  cudaError_t getKernel(cudaLibrary_t, const char*, cudaKernel_t*, std::vector<ParamLayout>*) override {
    return cudaErrorNotSupported;  // the stand-in does not execute kernels
  }
  cudaError_t launchKernel(cudaKernel_t, dim3, dim3, void**, std::size_t, cudaStream_t) override {
    return cudaErrorNotSupported;
  }
  cudaError_t launchKernelEx(cudaKernel_t, dim3, dim3, void**, std::size_t, cudaStream_t,
                             const LaunchOptions&) override {
    return cudaErrorNotSupported;
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

  std::map<void*, std::size_t> m_allocations;
  std::size_t m_used = 0;
  std::map<cudaLimit, std::size_t> m_limits;
  unsigned int m_flags = 0;
  std::map<cudaStream_t, std::unique_ptr<char>> m_streams;
  std::map<cudaEvent_t, std::unique_ptr<StandInEvent>> m_events;
  std::map<cudaLibrary_t, std::unique_ptr<StandInModule>> m_modules;
  std::map<cudaKernel_t, StandInKernelSettings> m_kernelSettings;
};

}  // namespace

std::unique_ptr<Executor> makeStandInExecutor() { return std::make_unique<StandInExecutor>(); }

}  // namespace flyt::backend
