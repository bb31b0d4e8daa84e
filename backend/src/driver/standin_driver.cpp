// The GPU stand-in behind the driver table: a test double for machines without a GPU, so that the
// whole client <-> transport <-> worker path of the driver API runs in CI. Every log line names it.
//
// What it does: "device" memory is zero-filled host memory (256-byte aligned) and a
// CUdeviceptr is its host address; copies and memsets run on the calling thread, so every stream
// operation has finished when the call returns; contexts, streams, events, modules and kernels are
// host objects whose addresses are the handles; modules are read for the kernels' parameter layouts.
//
// What it does not do: kernels are never executed (launches are checked and logged at debug
// level); module variables are zeroed host memory of the size their cubin's symbol table gives; PTX
// is not compiled, so a PTX module has no kernels it knows of. Streams, events and modules are not
// tied to a context; allocations are, and go when their context is destroyed or reset. Virtual
// memory (reservations, physical allocations, mappings) is process-wide, as the driver's is.
#include "driver/standin_driver.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <expected>
#include <sys/mman.h>
#include <unistd.h>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cubin_layout.hpp"
#include "flyt/api/fatbin.hpp"
#include "flyt/backend/executor.hpp"
#include "flyt/transport/log.hpp"

namespace flyt::backend::cu {
namespace {

spdlog::logger& log() { return flyt::logger("worker"); }

constexpr std::string_view kDescription = "stand-in (host memory; test double, no GPU)";
constexpr int kVersion = 13000;  // driver and context API version: CUDA 13.0
constexpr std::size_t kTotalMemory = 80ULL << 30;
constexpr std::size_t kAlignment = 256;       // cuMemAlloc's documented alignment
constexpr std::size_t kPitchAlignment = 512;  // CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT
constexpr std::uint64_t kMaxThreadsPerBlock = 1024;
constexpr int kMaxThreadsPerMultiprocessor = 2048;
constexpr int kMaxBlocksPerMultiprocessor = 32;
constexpr int kSharedPerBlockOptin = 232448;
constexpr int kLeastPriority = 0;
constexpr int kGreatestPriority = -5;
constexpr std::string_view kDeviceName = "Flyt GPU stand-in (host memory)";
constexpr std::string_view kPciBusId = "0000:00:00.0";
constexpr char kUuid[] = "flyt-stand-in-00";
static_assert(sizeof kUuid - 1 == sizeof(CUuuid::bytes));

// ---- no exception crosses the table ------------------------------------------------------------

template <auto Impl> struct Guarded;
template <class... Args, CUresult (*Impl)(Args...)>
struct Guarded<Impl> {
  static CUresult call(Args... args) noexcept {
    try {
      return Impl(args...);
    } catch (const std::bad_alloc&) {
      return CUDA_ERROR_OUT_OF_MEMORY;
    } catch (...) {
      return CUDA_ERROR_UNKNOWN;
    }
  }
};
// `Impl` as a function that throws nothing, for a table member of the same signature.
template <auto Impl> constexpr auto guarded = &Guarded<Impl>::call;

// The stream-ordered form of `Sync` (the same arguments and a trailing CUstream): here, since all
// work completes at once, `Sync` itself.
template <auto Sync> struct OnStream;
template <class... Args, CUresult (*Sync)(Args...)>
struct OnStream<Sync> {
  static CUresult call(Args... args, CUstream) { return Sync(args...); }
};
template <auto Sync> constexpr auto onStream = &OnStream<Sync>::call;

// ---- the objects behind the handles ------------------------------------------------------------

constexpr auto kDefaultLimits = [] {
  std::array<std::size_t, CU_LIMIT_MAX> limits{};
  limits[CU_LIMIT_STACK_SIZE] = 1024;
  limits[CU_LIMIT_PRINTF_FIFO_SIZE] = 1 << 20;
  limits[CU_LIMIT_MALLOC_HEAP_SIZE] = 8 << 20;
  limits[CU_LIMIT_DEV_RUNTIME_SYNC_DEPTH] = 2;
  limits[CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT] = 2048;
  return limits;
}();

struct Context {
  unsigned long long id = 0;
  bool primary = false;
  unsigned int flags = 0;
  std::array<std::size_t, CU_LIMIT_MAX> limits = kDefaultLimits;
  CUfunc_cache cacheConfig = CU_FUNC_CACHE_PREFER_NONE;
};

struct Stream {
  unsigned long long id = 0;
  unsigned int flags = 0;
  int priority = 0;
};

struct Event {
  unsigned int flags = 0;
  std::optional<std::chrono::steady_clock::time_point> recorded{};
};

// What an sm_90 driver answers for a small kernel; the settable ones change with cuFuncSetAttribute.
constexpr auto kFunctionDefaults = [] {
  std::array<int, CU_FUNC_ATTRIBUTE_MAX> attributes{};
  attributes[CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK] = int(kMaxThreadsPerBlock);
  attributes[CU_FUNC_ATTRIBUTE_NUM_REGS] = 32;
  attributes[CU_FUNC_ATTRIBUTE_PTX_VERSION] = 90;
  attributes[CU_FUNC_ATTRIBUTE_BINARY_VERSION] = 90;
  attributes[CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES] = 48 << 10;
  attributes[CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT] = -1;
  return attributes;
}();

// A kernel of a loaded module. It is the object behind both its CUkernel and its CUfunction
// handles, since the driver accepts a CUkernel wherever a CUfunction is expected.
struct Function {
  std::string name;  // mangled
  KernelLayout layout;
  std::array<int, CU_FUNC_ATTRIBUTE_MAX> attributes = kFunctionDefaults;
};

// A loaded image: a module, or a library (which is its own CUmodule, unloaded with the library).
struct Module {
  bool library = false;
  KernelLayouts layouts;               // from the image's cubins
  const char* unreadable = nullptr;    // why the kernels are unknown (PTX, compressed cubins), or null
  bool warnedUnreadable = false;
  std::map<std::string, Function*, std::less<>> functions;  // looked up so far, owned by State
  GlobalSizes globalSizes;             // the image's variables, from its cubins' symbol tables
  // The variables looked up so far: zeroed host memory of their size, freed with the module.
  std::map<std::string, std::unique_ptr<std::byte[]>, std::less<>> globals;
};

// Owns the objects of one kind; a handle is an object's address, checked here before any use.
template <class T>
class Registry {
 public:
  T* add(std::unique_ptr<T> object) {
    T* raw = object.get();
    m_objects.emplace(raw, std::move(object));
    return raw;
  }
  [[nodiscard]] T* find(const void* handle) const {
    auto it = m_objects.find(handle);
    return it == m_objects.end() ? nullptr : it->second.get();
  }
  bool erase(const void* handle) { return m_objects.erase(handle) == 1; }
  template <class Use>
  void forEach(Use&& use) const {
    for (const auto& [handle, object] : m_objects) use(*object);
  }

 private:
  std::map<const void*, std::unique_ptr<T>> m_objects;
};

template <class Handle, class T> Handle handleOf(T* object) { return reinterpret_cast<Handle>(object); }

struct Allocation {
  std::size_t bytes = 0;
  const Context* owner = nullptr;  // current when it was made; null if none was
  void* block = nullptr;           // what calloc gave, around the aligned base
};

struct State {
  std::mutex mutex;  // guards everything below
  std::map<CUdeviceptr, Allocation> allocations;
  std::size_t allocated = 0;
  Registry<Context> contexts;
  Context* primary = nullptr;  // device 0's, never destroyed
  unsigned int primaryRetains = 0;
  Registry<Stream> streams;
  Registry<Event> events;
  Registry<Module> modules;
  Registry<Function> functions;  // of every loaded module
  unsigned long long nextId = 1;  // of contexts and streams
};

// The table is made of C function pointers, so its state is process-wide. Never destroyed: a
// thread may still call through the table while the process exits.
State& state() {
  static State* const instance = [] {
    auto* made = new State;
    made->primary = made->contexts.add(std::make_unique<Context>(Context{.id = made->nextId++, .primary = true}));
    return made;
  }();
  return *instance;
}

// The calling thread's context stack, as the driver keeps one per thread.
thread_local std::vector<const void*> tContextStack;

// The calling thread's current context, or null (none, or destroyed since it was made current).
Context* currentContext(State& s) {
  return tContextStack.empty() ? nullptr : s.contexts.find(tContextStack.back());
}

std::size_t roundUp(std::size_t value, std::size_t multiple) { return (value + multiple - 1) / multiple * multiple; }

void* hostPointer(CUdeviceptr address) { return reinterpret_cast<void*>(address); }

CUresult checkDevice(CUdevice device) { return device == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE; }

// Whether an enumerator from the wire lies in [first, end) (the enums' underlying types differ).
template <class Enum> bool inRange(Enum value, long long first, long long end) {
  const auto number = static_cast<long long>(value);
  return number >= first && number < end;
}

// ---- initialisation and the device -------------------------------------------------------------

CUresult init(unsigned int flags) {
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  static std::once_flag announced;
  std::call_once(announced, [] {
    log().warn("{}: the CUDA driver API is answered in host memory and kernels are not executed", kDescription);
  });
  return CUDA_SUCCESS;
}

CUresult driverGetVersion(int* version) {
  if (version == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *version = kVersion;
  return CUDA_SUCCESS;
}

CUresult deviceGetCount(int* count) {
  if (count == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *count = 1;
  return CUDA_SUCCESS;
}

CUresult deviceGet(CUdevice* device, int ordinal) {
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *device = 0;
  return CUDA_SUCCESS;
}

// `text`, cut to `length` - 1 characters, NUL-terminated.
CUresult copyTruncated(std::string_view text, char* out, int length) {
  if (out == nullptr || length <= 0) return CUDA_ERROR_INVALID_VALUE;
  const std::size_t kept = std::min(text.size(), std::size_t(length) - 1);
  std::memcpy(out, text.data(), kept);
  out[kept] = '\0';
  return CUDA_SUCCESS;
}

CUresult deviceGetName(char* name, int length, CUdevice device) {
  if (auto error = checkDevice(device); error != CUDA_SUCCESS) return error;
  return copyTruncated(kDeviceName, name, length);
}

CUresult deviceGetPciBusId(char* busId, int length, CUdevice device) {
  if (auto error = checkDevice(device); error != CUDA_SUCCESS) return error;
  return copyTruncated(kPciBusId, busId, length);
}

CUresult deviceTotalMem(std::size_t* bytes, CUdevice device) {
  if (bytes == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (auto error = checkDevice(device); error != CUDA_SUCCESS) return error;
  *bytes = kTotalMemory;
  return CUDA_SUCCESS;
}

CUresult deviceGetUuid(CUuuid* uuid, CUdevice device) {
  if (uuid == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (auto error = checkDevice(device); error != CUDA_SUCCESS) return error;
  std::memcpy(uuid->bytes, kUuid, sizeof uuid->bytes);
  return CUDA_SUCCESS;
}

// An H100 SXM's answers (CUDA 13.0, compute mode default, no NUMA, no MPS); every attribute not
// listed answers 0. Host pointers serve as device pointers (cuMemHostGetDevicePointer), which
// CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM says.
constexpr std::pair<CUdevice_attribute, int> kH100Attributes[] = {
    {CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, int(kMaxThreadsPerBlock)},
    {CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X, 1024},
    {CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y, 1024},
    {CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z, 64},
    {CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X, 2147483647},
    {CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y, 65535},
    {CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z, 65535},
    {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK, 49152},
    {CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY, 65536},
    {CU_DEVICE_ATTRIBUTE_WARP_SIZE, 32},
    {CU_DEVICE_ATTRIBUTE_MAX_PITCH, 2147483647},
    {CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK, 65536},
    {CU_DEVICE_ATTRIBUTE_CLOCK_RATE, 1980000},
    {CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT, int(kPitchAlignment)},
    {CU_DEVICE_ATTRIBUTE_GPU_OVERLAP, 1},
    {CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, int(kStandInMultiprocessors)},
    {CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY, 1},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_WIDTH, 131072},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_WIDTH, 131072},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_HEIGHT, 65536},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_WIDTH, 16384},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_HEIGHT, 16384},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_DEPTH, 16384},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_WIDTH, 32768},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_HEIGHT, 32768},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_LAYERS, 2048},
    {CU_DEVICE_ATTRIBUTE_SURFACE_ALIGNMENT, 512},
    {CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS, 1},
    {CU_DEVICE_ATTRIBUTE_ECC_ENABLED, 1},
    {CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE, 2619000},
    {CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH, 5120},
    {CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, 50331648},
    {CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR, kMaxThreadsPerMultiprocessor},
    {CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT, 3},
    {CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING, 1},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LAYERED_WIDTH, 32768},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LAYERED_LAYERS, 2048},
    {CU_DEVICE_ATTRIBUTE_CAN_TEX2D_GATHER, 1},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_GATHER_WIDTH, 32768},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_GATHER_HEIGHT, 32768},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_WIDTH_ALTERNATE, 8192},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_HEIGHT_ALTERNATE, 8192},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_DEPTH_ALTERNATE, 32768},
    {CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT, 32},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURECUBEMAP_WIDTH, 32768},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURECUBEMAP_LAYERED_WIDTH, 32768},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURECUBEMAP_LAYERED_LAYERS, 2046},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE1D_WIDTH, 32768},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_WIDTH, 131072},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_HEIGHT, 65536},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE3D_WIDTH, 16384},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE3D_HEIGHT, 16384},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE3D_DEPTH, 16384},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE1D_LAYERED_WIDTH, 32768},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE1D_LAYERED_LAYERS, 2048},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_LAYERED_WIDTH, 32768},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_LAYERED_HEIGHT, 32768},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_LAYERED_LAYERS, 2048},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACECUBEMAP_WIDTH, 32768},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACECUBEMAP_LAYERED_WIDTH, 32768},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACECUBEMAP_LAYERED_LAYERS, 2046},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LINEAR_WIDTH, 131072},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LINEAR_HEIGHT, 65000},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LINEAR_PITCH, 2097120},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_MIPMAPPED_WIDTH, 32768},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_MIPMAPPED_HEIGHT, 32768},
    {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 9},
    {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 0},
    {CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_MIPMAPPED_WIDTH, 32768},
    {CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED, 1},
    {CU_DEVICE_ATTRIBUTE_GLOBAL_L1_CACHE_SUPPORTED, 1},
    {CU_DEVICE_ATTRIBUTE_LOCAL_L1_CACHE_SUPPORTED, 1},
    {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR, 233472},
    {CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR, 65536},
    {CU_DEVICE_ATTRIBUTE_SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO, 2},
    {CU_DEVICE_ATTRIBUTE_COMPUTE_PREEMPTION_SUPPORTED, 1},
    {CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM, 1},
    {CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH, 1},
    {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, kSharedPerBlockOptin},
    {CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED, 1},
    {CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, 1},
    {CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED, 1},
    {CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR, kMaxBlocksPerMultiprocessor},
    {CU_DEVICE_ATTRIBUTE_GENERIC_COMPRESSION_SUPPORTED, 1},
    {CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE, 32505856},
    {CU_DEVICE_ATTRIBUTE_MAX_ACCESS_POLICY_WINDOW_SIZE, 134213632},
    {CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK, 1024},
    {CU_DEVICE_ATTRIBUTE_SPARSE_CUDA_ARRAY_SUPPORTED, 1},
    {CU_DEVICE_ATTRIBUTE_TIMELINE_SEMAPHORE_INTEROP_SUPPORTED, 1},
    {CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED, 1},
    {CU_DEVICE_ATTRIBUTE_MEMPOOL_SUPPORTED_HANDLE_TYPES, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR},
    {CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH, 1},
    {CU_DEVICE_ATTRIBUTE_DEFERRED_MAPPING_CUDA_ARRAY_SUPPORTED, 1},
    {CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS, 1},
    {CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_WAIT_VALUE_NOR, 1},
    {CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED, 1},
    {CU_DEVICE_ATTRIBUTE_IPC_EVENT_SUPPORTED, 1},
    {CU_DEVICE_ATTRIBUTE_MEM_SYNC_DOMAIN_COUNT, 4},
    {CU_DEVICE_ATTRIBUTE_TENSOR_MAP_ACCESS_SUPPORTED, 1},
    {CU_DEVICE_ATTRIBUTE_UNIFIED_FUNCTION_POINTERS, 1},
    {CU_DEVICE_ATTRIBUTE_NUMA_ID, -1},
    {CU_DEVICE_ATTRIBUTE_GPU_PCI_DEVICE_ID, 0x233010de},
    {CU_DEVICE_ATTRIBUTE_GPU_PCI_SUBSYSTEM_ID, 0x16c110de},
};

constexpr auto kDeviceAttributes = [] {
  std::array<int, CU_DEVICE_ATTRIBUTE_MAX> values{};
  for (auto [attribute, value] : kH100Attributes) values[attribute] = value;
  return values;
}();

CUresult deviceGetAttribute(int* value, CUdevice_attribute attribute, CUdevice device) {
  if (value == nullptr || !inRange(attribute, 1, CU_DEVICE_ATTRIBUTE_MAX)) return CUDA_ERROR_INVALID_VALUE;
  if (auto error = checkDevice(device); error != CUDA_SUCCESS) return error;
  *value = kDeviceAttributes[attribute];
  return CUDA_SUCCESS;
}

// There is no peer: the answers of a device asked about itself.
CUresult deviceCanAccessPeer(int* canAccess, CUdevice device, CUdevice peer) {
  if (canAccess == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (checkDevice(device) != CUDA_SUCCESS || checkDevice(peer) != CUDA_SUCCESS) return CUDA_ERROR_INVALID_DEVICE;
  *canAccess = 0;
  return CUDA_SUCCESS;
}

CUresult deviceGetP2PAttribute(int* value, CUdevice_P2PAttribute, CUdevice source, CUdevice destination) {
  return deviceCanAccessPeer(value, source, destination);
}

// ---- memory ------------------------------------------------------------------------------------

using Allocations = std::map<CUdeviceptr, Allocation>;

Allocations::iterator release(State& s, Allocations::iterator allocation) {
  s.allocated -= allocation->second.bytes;
  std::free(allocation->second.block);
  return s.allocations.erase(allocation);
}

// What the driver frees with a context.
void releaseAllocationsOf(State& s, const Context* owner) {
  for (auto it = s.allocations.begin(); it != s.allocations.end();) {
    it = it->second.owner == owner ? release(s, it) : std::next(it);
  }
}

CUresult memAlloc(CUdeviceptr* address, std::size_t bytes) {
  if (address == nullptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;  // as the driver answers 0 bytes
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  if (bytes > kTotalMemory - s.allocated) return CUDA_ERROR_OUT_OF_MEMORY;
  // calloc rather than aligned_alloc and memset: fresh pages are zero and stay untouched, so a
  // test may allocate more than the machine has. The base is aligned inside the block.
  const std::size_t rounded = roundUp(std::max<std::size_t>(bytes, 1), kAlignment);
  std::unique_ptr<void, decltype(&std::free)> block(std::calloc(rounded + kAlignment, 1), &std::free);
  if (block == nullptr) return CUDA_ERROR_OUT_OF_MEMORY;
  const CUdeviceptr base = roundUp(reinterpret_cast<std::uintptr_t>(block.get()), kAlignment);
  s.allocations.emplace(base, Allocation{bytes, currentContext(s), block.get()});
  block.release();
  s.allocated += bytes;
  *address = base;
  return CUDA_SUCCESS;
}

CUresult memAllocPitch(CUdeviceptr* address, std::size_t* pitch, std::size_t width, std::size_t height,
                       unsigned int elementBytes) {
  if (pitch == nullptr || (elementBytes != 4 && elementBytes != 8 && elementBytes != 16)) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (width > kTotalMemory) return CUDA_ERROR_OUT_OF_MEMORY;
  const std::size_t rowBytes = roundUp(width, kPitchAlignment);
  if (height != 0 && rowBytes > kTotalMemory / height) return CUDA_ERROR_OUT_OF_MEMORY;
  if (auto error = memAlloc(address, rowBytes * height); error != CUDA_SUCCESS) return error;
  *pitch = rowBytes;
  return CUDA_SUCCESS;
}

CUresult memFree(CUdeviceptr base) {
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  auto allocation = s.allocations.find(base);
  if (allocation == s.allocations.end()) return CUDA_ERROR_INVALID_VALUE;
  release(s, allocation);
  return CUDA_SUCCESS;
}

// Either output may be null.
CUresult memGetAddressRange(CUdeviceptr* base, std::size_t* bytes, CUdeviceptr address) {
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  auto after = s.allocations.upper_bound(address);
  if (after == s.allocations.begin()) return CUDA_ERROR_NOT_FOUND;
  const auto& [start, allocation] = *std::prev(after);
  if (address - start >= allocation.bytes) return CUDA_ERROR_NOT_FOUND;
  if (base != nullptr) *base = start;
  if (bytes != nullptr) *bytes = allocation.bytes;
  return CUDA_SUCCESS;
}

CUresult memGetInfo(std::size_t* free, std::size_t* total) {
  if (free == nullptr || total == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  *free = kTotalMemory - s.allocated;
  *total = kTotalMemory;
  return CUDA_SUCCESS;
}

// Host memory needs no page-locking where no DMA engine reads it, and is its own device address.
CUresult memHostRegister(void*, std::size_t, unsigned int) { return CUDA_SUCCESS; }
CUresult memHostUnregister(void*) { return CUDA_SUCCESS; }

CUresult memHostGetDevicePointer(CUdeviceptr* address, void* host, unsigned int flags) {
  if (address == nullptr || host == nullptr || flags != 0) return CUDA_ERROR_INVALID_VALUE;
  *address = reinterpret_cast<CUdeviceptr>(host);
  return CUDA_SUCCESS;
}

// ---- virtual memory ------------------------------------------------------------------------------
// A reservation is inaccessible address space (mmap PROT_NONE); a physical allocation is a memfd of
// its size, so that every mapping of it shows the same bytes; cuMemMap maps the file over the
// reservation (MAP_FIXED), cuMemUnmap puts inaccessible space back. Access flags are recorded, not
// enforced: the worker checks ranges before any copy reaches here.

constexpr std::size_t kGranularity = 2u << 20;  // what the H100's driver answers

struct Physical {
  int fd = -1;
  std::size_t bytes = 0;
  CUmemAllocationProp prop{};
};

struct VirtualMemory {
  std::mutex mutex;
  std::map<CUdeviceptr, std::size_t> reservations;
  std::map<unsigned long long, Physical> physical;  // by handle (1, 2, ...)
  std::map<CUdeviceptr, std::pair<std::size_t, unsigned long long>> mappings;  // size, access flags
  unsigned long long nextHandle = 1;
};

VirtualMemory& virtualMemory() {
  static VirtualMemory* const instance = new VirtualMemory;  // never destroyed, as state()
  return *instance;
}

CUresult memGetAllocationGranularity(std::size_t* granularity, const CUmemAllocationProp* prop,
                                     CUmemAllocationGranularity_flags) {
  if (granularity == nullptr || prop == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *granularity = kGranularity;
  return CUDA_SUCCESS;
}

// The hint is taken when it is aligned and free, as the driver takes it (managed memory in Flyt's
// libcuda.so.1 asks for an address that is free in the application's process too).
CUresult memAddressReserve(CUdeviceptr* ptr, std::size_t size, std::size_t alignment, CUdeviceptr hint,
                           unsigned long long) {
  if (ptr == nullptr || size == 0 || size % kGranularity != 0 || (alignment != 0 && alignment % kGranularity != 0)) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  const std::size_t align = std::max(alignment, kGranularity);
  // More address space than exists; size + align below would wrap, and the trimming munmaps
  // would then cut into the process's own mappings.
  if (size > SIZE_MAX - align) return CUDA_ERROR_OUT_OF_MEMORY;
  std::uintptr_t base = 0;
  if (hint != 0 && hint % align == 0) {
    void* at = ::mmap(reinterpret_cast<void*>(hint), size, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
    if (at == reinterpret_cast<void*>(hint)) {
      base = hint;
    } else if (at != MAP_FAILED) {
      ::munmap(at, size);  // a kernel without MAP_FIXED_NOREPLACE placed it elsewhere
    }
  }
  if (base == 0) {
    void* space = ::mmap(nullptr, size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (space == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    const auto start = reinterpret_cast<std::uintptr_t>(space);
    base = roundUp(start, align);
    if (base > start) ::munmap(space, base - start);
    if (const std::uintptr_t tail = start + size + align - (base + size); tail > 0) {
      ::munmap(reinterpret_cast<void*>(base + size), tail);
    }
  }
  auto& v = virtualMemory();
  std::scoped_lock lock(v.mutex);
  v.reservations[base] = size;
  *ptr = base;
  return CUDA_SUCCESS;
}

CUresult memAddressFree(CUdeviceptr ptr, std::size_t size) {
  auto& v = virtualMemory();
  std::scoped_lock lock(v.mutex);
  auto it = v.reservations.find(ptr);
  if (it == v.reservations.end() || it->second != size) return CUDA_ERROR_INVALID_VALUE;
  ::munmap(reinterpret_cast<void*>(ptr), size);
  v.reservations.erase(it);
  return CUDA_SUCCESS;
}

CUresult memCreate(CUmemGenericAllocationHandle* handle, std::size_t size, const CUmemAllocationProp* prop,
                   unsigned long long flags) {
  if (handle == nullptr || prop == nullptr || size == 0 || size % kGranularity != 0 || flags != 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  auto& s = state();
  {
    std::scoped_lock lock(s.mutex);
    if (size > kTotalMemory - s.allocated) return CUDA_ERROR_OUT_OF_MEMORY;
    s.allocated += size;
  }
  const int fd = ::memfd_create("flyt-standin-physical", MFD_CLOEXEC);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    if (fd >= 0) ::close(fd);
    std::scoped_lock lock(s.mutex);
    s.allocated -= size;
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  auto& v = virtualMemory();
  std::scoped_lock lock(v.mutex);
  const auto id = v.nextHandle++;
  v.physical[id] = Physical{fd, size, *prop};
  *handle = id;
  return CUDA_SUCCESS;
}

// The file stays open while a mapping uses it (munmap, not close, ends a mapping).
CUresult memRelease(CUmemGenericAllocationHandle handle) {
  auto& v = virtualMemory();
  std::size_t bytes = 0;
  {
    std::scoped_lock lock(v.mutex);
    auto it = v.physical.find(handle);
    if (it == v.physical.end()) return CUDA_ERROR_INVALID_VALUE;
    ::close(it->second.fd);
    bytes = it->second.bytes;
    v.physical.erase(it);
  }
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  s.allocated -= std::min(bytes, s.allocated);
  return CUDA_SUCCESS;
}

CUresult memMap(CUdeviceptr ptr, std::size_t size, std::size_t offset, CUmemGenericAllocationHandle handle,
                unsigned long long flags) {
  auto& v = virtualMemory();
  std::scoped_lock lock(v.mutex);
  auto physical = v.physical.find(handle);
  if (physical == v.physical.end() || flags != 0 || size == 0 || size % kGranularity != 0 ||
      offset % kGranularity != 0 || offset > physical->second.bytes || size > physical->second.bytes - offset) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  void* mapped = ::mmap(reinterpret_cast<void*>(ptr), size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                        physical->second.fd, static_cast<off_t>(offset));
  if (mapped == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
  v.mappings[ptr] = {size, 0};
  return CUDA_SUCCESS;
}

CUresult memUnmap(CUdeviceptr ptr, std::size_t size) {
  auto& v = virtualMemory();
  std::scoped_lock lock(v.mutex);
  auto it = v.mappings.find(ptr);
  if (it == v.mappings.end() || it->second.first != size) return CUDA_ERROR_INVALID_VALUE;
  ::mmap(reinterpret_cast<void*>(ptr), size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
  v.mappings.erase(it);
  return CUDA_SUCCESS;
}

CUresult memSetAccess(CUdeviceptr ptr, std::size_t size, const CUmemAccessDesc* desc, std::size_t count) {
  if (desc == nullptr || count == 0) return CUDA_ERROR_INVALID_VALUE;
  auto& v = virtualMemory();
  std::scoped_lock lock(v.mutex);
  for (auto it = v.mappings.lower_bound(ptr); it != v.mappings.end() && it->first < ptr + size; ++it) {
    it->second.second = desc[count - 1].flags;
  }
  return CUDA_SUCCESS;
}

CUresult memGetAccess(unsigned long long* flags, const CUmemLocation* location, CUdeviceptr ptr) {
  if (flags == nullptr || location == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& v = virtualMemory();
  std::scoped_lock lock(v.mutex);
  auto after = v.mappings.upper_bound(ptr);
  if (after == v.mappings.begin()) return CUDA_ERROR_INVALID_VALUE;
  const auto& [base, mapping] = *std::prev(after);
  if (ptr - base >= mapping.first) return CUDA_ERROR_INVALID_VALUE;
  *flags = mapping.second;
  return CUDA_SUCCESS;
}

CUresult memGetAllocationProperties(CUmemAllocationProp* prop, CUmemGenericAllocationHandle handle) {
  if (prop == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& v = virtualMemory();
  std::scoped_lock lock(v.mutex);
  auto it = v.physical.find(handle);
  if (it == v.physical.end()) return CUDA_ERROR_INVALID_VALUE;
  *prop = it->second.prop;
  return CUDA_SUCCESS;
}

// ---- copies and memsets (the worker has checked the ranges) -------------------------------------

CUresult copy(void* to, const void* from, std::size_t bytes) {
  if (to == nullptr || from == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::memmove(to, from, bytes);  // a device-to-device copy may overlap
  return CUDA_SUCCESS;
}

CUresult memcpyHtoD(CUdeviceptr to, const void* from, std::size_t bytes) { return copy(hostPointer(to), from, bytes); }
CUresult memcpyDtoH(void* to, CUdeviceptr from, std::size_t bytes) { return copy(to, hostPointer(from), bytes); }
CUresult memcpyDtoD(CUdeviceptr to, CUdeviceptr from, std::size_t bytes) {
  return copy(hostPointer(to), hostPointer(from), bytes);
}

// cuMemsetD8/D16/D32: `count` elements of `value`.
template <class Element>
CUresult fill(CUdeviceptr to, Element value, std::size_t count) {
  if (to == 0 || to % alignof(Element) != 0) return CUDA_ERROR_INVALID_VALUE;
  std::fill_n(static_cast<Element*>(hostPointer(to)), count, value);
  return CUDA_SUCCESS;
}

// ---- contexts ----------------------------------------------------------------------------------

// The primary context as the driver leaves it after a reset or its last release: no allocations,
// default limits (its flags stay).
void resetPrimary(State& s) {
  releaseAllocationsOf(s, s.primary);
  s.primary->limits = kDefaultLimits;
  s.primary->cacheConfig = CU_FUNC_CACHE_PREFER_NONE;
}

// Runs `use` on device 0's primary context, under the lock.
template <class Use>
CUresult withPrimary(CUdevice device, Use&& use) {
  if (auto error = checkDevice(device); error != CUDA_SUCCESS) return error;
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  return use(s);
}

CUresult primaryCtxRetain(CUcontext* context, CUdevice device) {
  if (context == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return withPrimary(device, [&](State& s) {
    ++s.primaryRetains;
    *context = handleOf<CUcontext>(s.primary);
    return CUDA_SUCCESS;
  });
}

CUresult primaryCtxRelease(CUdevice device) {
  return withPrimary(device, [](State& s) {
    if (s.primaryRetains == 0) return CUDA_ERROR_INVALID_CONTEXT;
    if (--s.primaryRetains == 0) resetPrimary(s);
    return CUDA_SUCCESS;
  });
}

CUresult primaryCtxReset(CUdevice device) {
  return withPrimary(device, [](State& s) {
    resetPrimary(s);
    return CUDA_SUCCESS;
  });
}

CUresult primaryCtxGetState(CUdevice device, unsigned int* flags, int* active) {
  if (flags == nullptr || active == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return withPrimary(device, [&](State& s) {
    *flags = s.primary->flags;
    *active = s.primaryRetains > 0 ? 1 : 0;
    return CUDA_SUCCESS;
  });
}

CUresult primaryCtxSetFlags(CUdevice device, unsigned int flags) {
  return withPrimary(device, [&](State& s) {
    s.primary->flags = flags;
    return CUDA_SUCCESS;
  });
}

// The context is made current, as the driver does; its creation parameters are not used.
CUresult ctxCreate(CUcontext* context, CUctxCreateParams*, unsigned int flags, CUdevice device) {
  if (context == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (auto error = checkDevice(device); error != CUDA_SUCCESS) return error;
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  Context* made = s.contexts.add(std::make_unique<Context>(Context{.id = s.nextId++, .flags = flags}));
  tContextStack.push_back(made);
  *context = handleOf<CUcontext>(made);
  return CUDA_SUCCESS;
}

CUresult ctxDestroy(CUcontext context) {
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  Context* found = s.contexts.find(context);
  if (found == nullptr || found->primary) return CUDA_ERROR_INVALID_CONTEXT;
  releaseAllocationsOf(s, found);
  if (!tContextStack.empty() && tContextStack.back() == found) tContextStack.pop_back();
  s.contexts.erase(context);
  return CUDA_SUCCESS;
}

// Null replaces nothing: it pops the top, as the driver's cuCtxSetCurrent(NULL) does.
CUresult ctxSetCurrent(CUcontext context) {
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  if (context == nullptr) {
    if (!tContextStack.empty()) tContextStack.pop_back();
    return CUDA_SUCCESS;
  }
  if (s.contexts.find(context) == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  if (tContextStack.empty()) {
    tContextStack.push_back(context);
  } else {
    tContextStack.back() = context;
  }
  return CUDA_SUCCESS;
}

CUresult ctxGetCurrent(CUcontext* context) {
  if (context == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  *context = handleOf<CUcontext>(currentContext(s));
  return CUDA_SUCCESS;
}

CUresult ctxPushCurrent(CUcontext context) {
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  if (s.contexts.find(context) == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  tContextStack.push_back(context);
  return CUDA_SUCCESS;
}

// `context` may be null.
CUresult ctxPopCurrent(CUcontext* context) {
  if (tContextStack.empty()) return CUDA_ERROR_INVALID_CONTEXT;
  if (context != nullptr) *context = static_cast<CUcontext>(const_cast<void*>(tContextStack.back()));
  tContextStack.pop_back();
  return CUDA_SUCCESS;
}

// Runs `use` on `context`, or on the current one where `context` is null, under the lock.
template <class Use>
CUresult withContext(CUcontext context, Use&& use) {
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  Context* found = context == nullptr ? currentContext(s) : s.contexts.find(context);
  if (found == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  return use(*found);
}

template <class Use>
CUresult withCurrentContext(Use&& use) {
  return withContext(nullptr, std::forward<Use>(use));
}

CUresult ctxGetDevice(CUdevice* device) {
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return withCurrentContext([&](Context&) {
    *device = 0;
    return CUDA_SUCCESS;
  });
}

CUresult ctxSynchronize() { return CUDA_SUCCESS; }
CUresult ctxSynchronizeOf(CUcontext) { return CUDA_SUCCESS; }  // cuCtxSynchronize_v2 (CUDA 13)

// A 2D copy: device and host memory are both host memory here; arrays do not exist.
CUresult memcpy2D(const CUDA_MEMCPY2D* p) {
  if (p == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto base = [](CUmemorytype type, const void* host, CUdeviceptr device) -> std::uintptr_t {
    if (type == CU_MEMORYTYPE_HOST) return reinterpret_cast<std::uintptr_t>(host);
    if (type == CU_MEMORYTYPE_DEVICE || type == CU_MEMORYTYPE_UNIFIED) return static_cast<std::uintptr_t>(device);
    return 0;
  };
  const std::uintptr_t src = base(p->srcMemoryType, p->srcHost, p->srcDevice);
  const std::uintptr_t dst = base(p->dstMemoryType, p->dstHost, p->dstDevice);
  if (src == 0 || dst == 0) return p->srcMemoryType == CU_MEMORYTYPE_ARRAY || p->dstMemoryType == CU_MEMORYTYPE_ARRAY
                                         ? CUDA_ERROR_NOT_SUPPORTED
                                         : CUDA_ERROR_INVALID_VALUE;
  for (std::size_t row = 0; row < p->Height; ++row) {
    std::memmove(reinterpret_cast<void*>(dst + (p->dstY + row) * p->dstPitch + p->dstXInBytes),
                 reinterpret_cast<const void*>(src + (p->srcY + row) * p->srcPitch + p->srcXInBytes), p->WidthInBytes);
  }
  return CUDA_SUCCESS;
}
CUresult memcpy2DAsync(const CUDA_MEMCPY2D* p, CUstream) { return memcpy2D(p); }

// Stream capture is never active on the stand-in (it has no graphs).
CUresult streamIsCapturing(CUstream, CUstreamCaptureStatus* status) {
  if (status == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *status = CU_STREAM_CAPTURE_STATUS_NONE;
  return CUDA_SUCCESS;
}
CUresult streamCaptureInfo(CUstream, CUstreamCaptureStatus* status, cuuint64_t* id, CUgraph* graph,
                           const CUgraphNode** dependencies, const CUgraphEdgeData** edgeData, std::size_t* count) {
  if (status == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *status = CU_STREAM_CAPTURE_STATUS_NONE;
  if (id != nullptr) *id = 0;
  if (graph != nullptr) *graph = nullptr;
  if (dependencies != nullptr) *dependencies = nullptr;
  if (edgeData != nullptr) *edgeData = nullptr;
  if (count != nullptr) *count = 0;
  return CUDA_SUCCESS;
}

CUresult ctxGetApiVersion(CUcontext context, unsigned int* version) {
  if (version == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return withContext(context, [&](Context&) {
    *version = kVersion;
    return CUDA_SUCCESS;
  });
}

CUresult ctxGetId(CUcontext context, unsigned long long* id) {
  if (id == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return withContext(context, [&](Context& found) {
    *id = found.id;
    return CUDA_SUCCESS;
  });
}

CUresult ctxGetLimit(std::size_t* value, CUlimit limit) {
  if (value == nullptr || !inRange(limit, 0, CU_LIMIT_MAX)) return CUDA_ERROR_INVALID_VALUE;
  return withCurrentContext([&](Context& found) {
    *value = found.limits[limit];
    return CUDA_SUCCESS;
  });
}

CUresult ctxSetLimit(CUlimit limit, std::size_t value) {
  if (!inRange(limit, 0, CU_LIMIT_MAX)) return CUDA_ERROR_INVALID_VALUE;
  if (limit == CU_LIMIT_SHMEM_SIZE || limit == CU_LIMIT_CIG_ENABLED) return CUDA_ERROR_UNSUPPORTED_LIMIT;
  return withCurrentContext([&](Context& found) {
    found.limits[limit] = value;
    return CUDA_SUCCESS;
  });
}

// cuCtxGetFlags, cuCtxGetCacheConfig.
template <class T, T Context::*Field>
CUresult ctxGet(T* value) {
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return withCurrentContext([&](Context& found) {
    *value = found.*Field;
    return CUDA_SUCCESS;
  });
}

CUresult ctxSetCacheConfig(CUfunc_cache config) {
  if (!inRange(config, CU_FUNC_CACHE_PREFER_NONE, CU_FUNC_CACHE_PREFER_EQUAL + 1)) return CUDA_ERROR_INVALID_VALUE;
  return withCurrentContext([&](Context& found) {
    found.cacheConfig = config;
    return CUDA_SUCCESS;
  });
}

CUresult ctxSetFlags(unsigned int flags) {
  return withCurrentContext([&](Context& found) {
    found.flags = flags;
    return CUDA_SUCCESS;
  });
}

// Either output may be null.
CUresult ctxGetStreamPriorityRange(int* least, int* greatest) {
  if (least != nullptr) *least = kLeastPriority;
  if (greatest != nullptr) *greatest = kGreatestPriority;
  return CUDA_SUCCESS;
}

// ---- streams and events ------------------------------------------------------------------------

bool isDefaultStream(CUstream stream) {
  return stream == nullptr || stream == CU_STREAM_LEGACY || stream == CU_STREAM_PER_THREAD;
}

// Runs `use` on `stream` (the default streams: priority 0, no flags, id 0), under the lock.
template <class Use>
CUresult withStream(CUstream stream, Use&& use) {
  static constexpr Stream kDefaultStream{};
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  const Stream* found = isDefaultStream(stream) ? &kDefaultStream : s.streams.find(stream);
  if (found == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  return use(*found);
}

// The priority is clamped to the range, as the driver does.
CUresult streamCreateWithPriority(CUstream* stream, unsigned int flags, int priority) {
  if (stream == nullptr || (flags & ~unsigned{CU_STREAM_NON_BLOCKING}) != 0) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  const int clamped = std::clamp(priority, kGreatestPriority, kLeastPriority);
  Stream* made = s.streams.add(std::make_unique<Stream>(Stream{s.nextId++, flags, clamped}));
  *stream = handleOf<CUstream>(made);
  return CUDA_SUCCESS;
}

CUresult streamCreate(CUstream* stream, unsigned int flags) { return streamCreateWithPriority(stream, flags, 0); }

CUresult streamDestroy(CUstream stream) {
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  return s.streams.erase(stream) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

// All work has completed: synchronising and querying only check the handle.
CUresult streamSynchronize(CUstream stream) {
  return withStream(stream, [](const Stream&) { return CUDA_SUCCESS; });
}

// cuStreamGetPriority, cuStreamGetFlags, cuStreamGetId.
template <class T, T Stream::*Field>
CUresult streamGet(CUstream stream, T* value) {
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return withStream(stream, [&](const Stream& found) {
    *value = found.*Field;
    return CUDA_SUCCESS;
  });
}

// Runs `use` on `event`, under the lock.
template <class Use>
CUresult withEvent(CUevent event, Use&& use) {
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  Event* found = s.events.find(event);
  if (found == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  return use(*found);
}

CUresult streamWaitEvent(CUstream stream, CUevent event, unsigned int) {
  if (auto error = streamSynchronize(stream); error != CUDA_SUCCESS) return error;
  return withEvent(event, [](Event&) { return CUDA_SUCCESS; });
}

CUresult eventCreate(CUevent* event, unsigned int flags) {
  constexpr unsigned kKnown = CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS;
  const bool interprocessWithTiming = (flags & CU_EVENT_INTERPROCESS) != 0 && (flags & CU_EVENT_DISABLE_TIMING) == 0;
  if (event == nullptr || (flags & ~kKnown) != 0 || interprocessWithTiming) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  *event = handleOf<CUevent>(s.events.add(std::make_unique<Event>(Event{.flags = flags})));
  return CUDA_SUCCESS;
}

CUresult eventDestroy(CUevent event) {
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  return s.events.erase(event) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

CUresult eventRecordWithFlags(CUevent event, CUstream, unsigned int flags) {
  if (flags > CU_EVENT_RECORD_EXTERNAL) return CUDA_ERROR_INVALID_VALUE;
  return withEvent(event, [](Event& found) {
    found.recorded = std::chrono::steady_clock::now();
    return CUDA_SUCCESS;
  });
}

CUresult eventRecord(CUevent event, CUstream stream) { return eventRecordWithFlags(event, stream, 0); }

// The work an event waits for has completed: synchronising and querying only check the handle.
CUresult eventSynchronize(CUevent event) {
  return withEvent(event, [](Event&) { return CUDA_SUCCESS; });
}

CUresult eventElapsedTime(float* milliseconds, CUevent start, CUevent end) {
  if (milliseconds == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  const Event* first = s.events.find(start);
  const Event* last = s.events.find(end);
  const auto timed = [](const Event* e) {
    return e != nullptr && e->recorded && (e->flags & CU_EVENT_DISABLE_TIMING) == 0;
  };
  if (!timed(first) || !timed(last)) return CUDA_ERROR_INVALID_HANDLE;
  *milliseconds = std::chrono::duration<float, std::milli>(*last->recorded - *first->recorded).count();
  return CUDA_SUCCESS;
}

// ---- module images -----------------------------------------------------------------------------

enum class ImageKind { kFatbin, kCubin, kPtx };

struct Image {
  ImageKind kind;
  std::span<const std::byte> bytes;
};

// Compares byte by byte so that it never reads past the NUL of a short PTX text.
bool startsWith(const void* image, std::span<const unsigned char> prefix) {
  const auto* bytes = static_cast<const unsigned char*>(image);
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (bytes[i] != prefix[i]) return false;
  }
  return true;
}

template <class T> T readAt(const std::byte* base, std::uint64_t offset) {
  T value;
  std::memcpy(&value, base + offset, sizeof value);
  return value;
}

// Raises `end` to `offset + length`; false when that passes the largest image accepted.
bool reach(std::uint64_t& end, std::uint64_t offset, std::uint64_t length) {
  if (offset > api::kMaxFatbinBytes || length > api::kMaxFatbinBytes - offset) return false;
  end = std::max(end, offset + length);
  return true;
}

// A bare cubin tells its length only through its ELF64 headers: the furthest end of its section
// and program header tables, of its sections' bytes in the file and of its segments. As with the
// driver's cuModuleLoadData, the caller vouches that the image is whole.
std::expected<std::size_t, CUresult> elfBytes(const std::byte* elf) {
  constexpr std::uint32_t kNoBits = 8;  // SHT_NOBITS: a section without bytes in the file
  if (elf[4] != std::byte{2}) return std::unexpected(CUDA_ERROR_INVALID_IMAGE);  // not ELFCLASS64
  const auto sections = readAt<std::uint64_t>(elf, 0x28);
  const auto sectionBytes = readAt<std::uint16_t>(elf, 0x3a);
  const auto sectionCount = readAt<std::uint16_t>(elf, 0x3c);
  const auto segments = readAt<std::uint64_t>(elf, 0x20);
  const auto segmentBytes = readAt<std::uint16_t>(elf, 0x36);
  const auto segmentCount = readAt<std::uint16_t>(elf, 0x38);
  std::uint64_t end = 64;  // the ELF header
  bool fits = (sectionCount == 0 || sectionBytes >= 64) && (segmentCount == 0 || segmentBytes >= 56) &&
              reach(end, sections, std::uint64_t{sectionCount} * sectionBytes) &&
              reach(end, segments, std::uint64_t{segmentCount} * segmentBytes);
  for (std::uint16_t i = 0; fits && i < sectionCount; ++i) {
    const std::byte* header = elf + sections + std::uint64_t{i} * sectionBytes;
    if (readAt<std::uint32_t>(header, 4) == kNoBits) continue;
    fits = reach(end, readAt<std::uint64_t>(header, 24), readAt<std::uint64_t>(header, 32));
  }
  for (std::uint16_t i = 0; fits && i < segmentCount; ++i) {
    const std::byte* header = elf + segments + std::uint64_t{i} * segmentBytes;
    fits = reach(end, readAt<std::uint64_t>(header, 8), readAt<std::uint64_t>(header, 32));
  }
  if (!fits) return std::unexpected(CUDA_ERROR_INVALID_IMAGE);
  return static_cast<std::size_t>(end);
}

// What `image` is and how long: a fatbin by its header, a cubin by its ELF headers, otherwise PTX
// text up to its NUL.
std::expected<Image, CUresult> identify(const void* image) {
  static constexpr unsigned char kFatbinMagic[] = {0x50, 0xed, 0x55, 0xba};  // 0xBA55ED50, little-endian
  static constexpr unsigned char kElfMagic[] = {0x7f, 'E', 'L', 'F'};
  const auto* bytes = static_cast<const std::byte*>(image);
  if (startsWith(image, kFatbinMagic)) {
    auto length = api::fatbinImageBytes(image);
    if (!length) return std::unexpected(CUDA_ERROR_INVALID_IMAGE);
    return Image{ImageKind::kFatbin, {bytes, *length}};
  }
  if (startsWith(image, kElfMagic)) {
    auto length = elfBytes(bytes);
    if (!length) return std::unexpected(length.error());
    return Image{ImageKind::kCubin, {bytes, *length}};
  }
  return Image{ImageKind::kPtx, {bytes, std::strlen(static_cast<const char*>(image)) + 1}};
}

// A module of `image`'s kernels, read during the call: nothing of the caller's buffer is kept. An
// image whose kernels cannot be read (PTX, compressed cubins) loads, and lookups in it fail.
std::expected<std::unique_ptr<Module>, CUresult> readModule(const void* image, bool library) {
  auto found = identify(image);
  if (!found) return std::unexpected(found.error());
  auto module = std::make_unique<Module>();
  module->library = library;
  if (found->kind == ImageKind::kPtx) {
    module->unreadable = "PTX is not compiled by the stand-in, so its kernels are unknown";
    return module;
  }
  auto layouts = found->kind == ImageKind::kFatbin ? fatbinKernelLayouts(found->bytes)
                                                   : cubinKernelLayouts(found->bytes);
  if (layouts) {
    module->layouts = std::move(*layouts);
    auto globals = found->kind == ImageKind::kFatbin ? fatbinGlobals(found->bytes) : cubinGlobals(found->bytes);
    if (globals) module->globalSizes = std::move(*globals);
    return module;
  }
  if (layouts.error() == CubinLayoutError::kNoCubin || layouts.error() == CubinLayoutError::kCompressed) {
    module->unreadable = describe(layouts.error());
    return module;
  }
  log().warn("stand-in: module image refused: {}", describe(layouts.error()));
  return std::unexpected(CUDA_ERROR_INVALID_IMAGE);
}

// ---- modules and libraries ---------------------------------------------------------------------

template <class Handle>
CUresult load(Handle* handle, const void* image, bool library) {
  if (handle == nullptr || image == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto module = readModule(image, library);
  if (!module) return module.error();
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  *handle = handleOf<Handle>(s.modules.add(std::move(*module)));
  return CUDA_SUCCESS;
}

// JIT and library options change nothing here: no code is compiled.
CUresult moduleLoadData(CUmodule* module, const void* image) { return load(module, image, false); }
CUresult moduleLoadDataEx(CUmodule* module, const void* image, unsigned int, CUjit_option*, void**) {
  return load(module, image, false);
}
CUresult libraryLoadData(CUlibrary* library, const void* code, CUjit_option*, void**, unsigned int,
                         CUlibraryOption*, void**, unsigned int) {
  return load(library, code, true);
}

// The module behind a CUmodule or CUlibrary handle (a library is its own CUmodule); with
// `libraryOnly`, only a library.
template <class Handle> Module* findModule(State& s, Handle handle, bool libraryOnly) {
  Module* found = s.modules.find(handle);
  return found == nullptr || (libraryOnly && !found->library) ? nullptr : found;
}

// A library's CUmodule is unloaded with the library, not on its own.
template <class Handle>
CUresult unload(Handle handle, bool library) {
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  Module* found = s.modules.find(handle);
  if (found == nullptr || found->library != library) return CUDA_ERROR_INVALID_HANDLE;
  for (const auto& [name, function] : found->functions) s.functions.erase(function);
  s.modules.erase(handle);
  return CUDA_SUCCESS;
}

CUresult moduleUnload(CUmodule module) { return unload(module, false); }
CUresult libraryUnload(CUlibrary library) { return unload(library, true); }

CUresult libraryGetModule(CUmodule* module, CUlibrary library) {
  if (module == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  Module* found = findModule(s, library, true);
  if (found == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  *module = handleOf<CUmodule>(found);
  return CUDA_SUCCESS;
}

// The kernel `name` of `module`, made at its first lookup.
std::expected<Function*, CUresult> lookUp(State& s, Module& module, std::string_view name) {
  if (auto known = module.functions.find(name); known != module.functions.end()) return known->second;
  if (module.unreadable != nullptr) {
    if (!std::exchange(module.warnedUnreadable, true)) {
      log().warn("stand-in: kernel {} and every other of its module not found: {}", name, module.unreadable);
    }
    return std::unexpected(CUDA_ERROR_NOT_FOUND);
  }
  auto layout = module.layouts.find(name);
  if (layout == module.layouts.end()) return std::unexpected(CUDA_ERROR_NOT_FOUND);
  auto function = std::make_unique<Function>(Function{.name = layout->first, .layout = layout->second});
  Function* made = s.functions.add(std::move(function));
  module.functions.emplace(layout->first, made);
  return made;
}

// cuModuleGetFunction and cuLibraryGetKernel.
template <class Out, class Handle>
CUresult getFunction(Out* out, Handle module, const char* name, bool libraryOnly) {
  if (out == nullptr || name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  Module* found = findModule(s, module, libraryOnly);
  if (found == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  auto function = lookUp(s, *found, name);
  if (!function) return function.error();
  *out = handleOf<Out>(*function);
  return CUDA_SUCCESS;
}

CUresult moduleGetFunction(CUfunction* function, CUmodule module, const char* name) {
  return getFunction(function, module, name, false);
}

// cuModuleGetFunctionCount and cuModuleEnumerateFunctions: every kernel of the module's cubins, in
// name order.
CUresult moduleFunctionCount(unsigned int* count, CUmodule module) {
  if (count == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  Module* found = findModule(s, module, false);
  if (found == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  *count = static_cast<unsigned>(found->layouts.size());
  return CUDA_SUCCESS;
}
CUresult moduleEnumerateFunctions(CUfunction* functions, unsigned int count, CUmodule module) {
  if (functions == nullptr && count != 0) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  Module* found = findModule(s, module, false);
  if (found == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if (count != found->layouts.size()) return CUDA_ERROR_INVALID_VALUE;
  unsigned i = 0;
  for (const auto& [name, layout] : found->layouts) {
    auto function = lookUp(s, *found, name);
    if (!function) return function.error();
    functions[i++] = handleOf<CUfunction>(*function);
  }
  return CUDA_SUCCESS;
}
CUresult libraryGetKernel(CUkernel* kernel, CUlibrary library, const char* name) {
  return getFunction(kernel, library, name, true);
}

// cuModuleGetGlobal and cuLibraryGetGlobal: a variable is zeroed host memory of the size its
// cubin's symbol table gives (the stand-in does not read initialisers).
template <class Handle>
CUresult getGlobal(CUdeviceptr* address, std::size_t* bytes, Handle handle, const char* name) {
  if (name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  Module* module = s.modules.find(handle);
  if (module == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  auto size = module->globalSizes.find(name);
  if (size == module->globalSizes.end()) return CUDA_ERROR_NOT_FOUND;
  auto& storage = module->globals[size->first];
  if (!storage) storage = std::make_unique<std::byte[]>(size->second);
  if (address != nullptr) *address = reinterpret_cast<CUdeviceptr>(storage.get());
  if (bytes != nullptr) *bytes = size->second;
  return CUDA_SUCCESS;
}

// ---- kernels and functions (one object behind both handles) ------------------------------------

// Runs `use` on the kernel behind a CUfunction or CUkernel handle, under the lock.
template <class Handle, class Use>
CUresult withFunction(Handle handle, Use&& use) {
  auto& s = state();
  std::scoped_lock lock(s.mutex);
  Function* found = s.functions.find(handle);
  if (found == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  return use(*found);
}

CUresult kernelGetFunction(CUfunction* function, CUkernel kernel) {
  if (function == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return withFunction(kernel, [&](Function& found) {
    *function = handleOf<CUfunction>(&found);
    return CUDA_SUCCESS;
  });
}

// cuFuncGetParamInfo and cuKernelGetParamInfo; `size` may be null.
template <class Handle>
CUresult paramInfo(Handle handle, std::size_t index, std::size_t* offset, std::size_t* size) {
  if (offset == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return withFunction(handle, [&](Function& found) {
    if (!found.layout.complete) {
      log().warn("stand-in: kernel {}: its cubin gives no per-parameter layout ({} parameter bytes)", found.name,
                 found.layout.paramBytes);
      return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (index >= found.layout.params.size()) return CUDA_ERROR_INVALID_VALUE;
    *offset = found.layout.params[index].offset;
    if (size != nullptr) *size = found.layout.params[index].size;
    return CUDA_SUCCESS;
  });
}

template <class Handle>
CUresult getName(const char** name, Handle handle) {
  if (name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return withFunction(handle, [&](Function& found) {
    *name = found.name.c_str();
    return CUDA_SUCCESS;
  });
}

template <class Handle>
CUresult getAttribute(int* value, CUfunction_attribute attribute, Handle handle) {
  if (value == nullptr || !inRange(attribute, 0, CU_FUNC_ATTRIBUTE_MAX)) return CUDA_ERROR_INVALID_VALUE;
  return withFunction(handle, [&](Function& found) {
    *value = found.attributes[attribute];
    return CUDA_SUCCESS;
  });
}

// The attributes an application may set, and their ranges; the others are read-only.
bool settable(CUfunction_attribute attribute, int value) {
  switch (attribute) {
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: return value >= 0 && value <= kSharedPerBlockOptin;
    case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT: return value >= -1 && value <= 100;
    case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH:
    case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT:
    case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH:
    case CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED:
    case CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE: return value >= 0;
    default: return false;
  }
}

template <class Handle>
CUresult setAttribute(Handle handle, CUfunction_attribute attribute, int value) {
  if (!settable(attribute, value)) return CUDA_ERROR_INVALID_VALUE;
  return withFunction(handle, [&](Function& found) {
    found.attributes[attribute] = value;
    return CUDA_SUCCESS;
  });
}

CUresult kernelGetAttribute(int* value, CUfunction_attribute attribute, CUkernel kernel, CUdevice device) {
  if (auto error = checkDevice(device); error != CUDA_SUCCESS) return error;
  return getAttribute(value, attribute, kernel);
}

CUresult kernelSetAttribute(CUfunction_attribute attribute, int value, CUkernel kernel, CUdevice device) {
  if (auto error = checkDevice(device); error != CUDA_SUCCESS) return error;
  return setAttribute(kernel, attribute, value);
}

// Accepted: there is no cache to configure.
CUresult funcSetCacheConfig(CUfunction function, CUfunc_cache config) {
  if (!inRange(config, CU_FUNC_CACHE_PREFER_NONE, CU_FUNC_CACHE_PREFER_EQUAL + 1)) return CUDA_ERROR_INVALID_VALUE;
  return withFunction(function, [](Function&) { return CUDA_SUCCESS; });
}

// ---- launches and occupancy --------------------------------------------------------------------

struct Dims {
  unsigned int x, y, z;
};

// The device's limits (the attributes it answers) a launch must keep to.
constexpr Dims kMaxGrid{2147483647U, 65535U, 65535U};
constexpr Dims kMaxBlock{1024U, 1024U, 64U};

// Checked as the driver would (geometry within the device's limits, dynamic shared memory within
// the kernel's CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES), then dropped: kernels are not
// executed.
CUresult launch(CUfunction function, Dims grid, Dims block, unsigned int sharedBytes) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0 ||
      grid.x > kMaxGrid.x || grid.y > kMaxGrid.y || grid.z > kMaxGrid.z || block.x > kMaxBlock.x ||
      block.y > kMaxBlock.y || block.z > kMaxBlock.z ||
      std::uint64_t{block.x} * block.y * block.z > kMaxThreadsPerBlock) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  return withFunction(function, [&](Function& found) {
    if (sharedBytes > static_cast<unsigned>(found.attributes[CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES])) {
      return CUDA_ERROR_INVALID_VALUE;
    }
    log().debug("stand-in: launch {} grid ({},{},{}) block ({},{},{}), {} shared bytes, kernels are not executed",
                found.name, grid.x, grid.y, grid.z, block.x, block.y, block.z, sharedBytes);
    return CUDA_SUCCESS;
  });
}

CUresult launchKernel(CUfunction function, unsigned int gridX, unsigned int gridY, unsigned int gridZ,
                      unsigned int blockX, unsigned int blockY, unsigned int blockZ, unsigned int sharedBytes,
                      CUstream, void**, void**) {
  return launch(function, {gridX, gridY, gridZ}, {blockX, blockY, blockZ}, sharedBytes);
}

CUresult launchCooperativeKernel(CUfunction function, unsigned int gridX, unsigned int gridY, unsigned int gridZ,
                                 unsigned int blockX, unsigned int blockY, unsigned int blockZ,
                                 unsigned int sharedBytes, CUstream, void**) {
  return launch(function, {gridX, gridY, gridZ}, {blockX, blockY, blockZ}, sharedBytes);
}

CUresult launchKernelEx(const CUlaunchConfig* config, CUfunction function, void**, void**) {
  if (config == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return launch(function, {config->gridDimX, config->gridDimY, config->gridDimZ},
                {config->blockDimX, config->blockDimY, config->blockDimZ}, config->sharedMemBytes);
}

// Blocks per SM limited by threads and by the block limit only.
CUresult occupancyWithFlags(int* blocks, CUfunction function, int blockSize, std::size_t, unsigned int) {
  if (blocks == nullptr || blockSize <= 0) return CUDA_ERROR_INVALID_VALUE;
  return withFunction(function, [&](Function&) {
    *blocks = blockSize > int(kMaxThreadsPerBlock)
                  ? 0
                  : std::min(kMaxBlocksPerMultiprocessor, kMaxThreadsPerMultiprocessor / blockSize);
    return CUDA_SUCCESS;
  });
}

CUresult occupancy(int* blocks, CUfunction function, int blockSize, std::size_t dynamicSharedBytes) {
  return occupancyWithFlags(blocks, function, blockSize, dynamicSharedBytes, 0);
}

// ---- graphs built node by node ------------------------------------------------------------------
// A graph is its nodes in the order they were added (every dependency is an earlier node, so that
// order is a topological one); an instantiated graph is a copy of them. A launch runs the memset
// and memcpy nodes in order on the calling thread and checks (does not run) the kernel nodes.
// Stream capture is not served here.

struct GraphNode {
  enum class Kind { kKernel, kMemset, kMemcpy, kEmpty } kind = Kind::kEmpty;
  CUfunction function = nullptr;
  Dims grid{}, block{};
  unsigned int sharedBytes = 0;
  CUDA_MEMSET_NODE_PARAMS memset{};
  CUDA_MEMCPY3D copy{};
};

struct Graph {
  std::vector<std::unique_ptr<GraphNode>> nodes;
};

struct GraphExec {
  std::vector<GraphNode> nodes;
  std::map<const GraphNode*, std::size_t> index;  // the graph's node -> its copy here
};

struct Graphs {
  std::mutex mutex;
  Registry<Graph> graphs;
  Registry<GraphExec> execs;
  std::map<const GraphNode*, Graph*> owner;
};

Graphs& graphs() {
  static Graphs* const instance = new Graphs;  // never destroyed, as state()
  return *instance;
}

CUresult graphCreate(CUgraph* graph, unsigned int flags) {
  if (graph == nullptr || flags != 0) return CUDA_ERROR_INVALID_VALUE;
  auto& g = graphs();
  std::scoped_lock lock(g.mutex);
  *graph = handleOf<CUgraph>(g.graphs.add(std::make_unique<Graph>()));
  return CUDA_SUCCESS;
}

CUresult graphDestroy(CUgraph graph) {
  auto& g = graphs();
  std::scoped_lock lock(g.mutex);
  Graph* found = g.graphs.find(graph);
  if (found == nullptr) return CUDA_ERROR_INVALID_VALUE;
  for (const auto& node : found->nodes) g.owner.erase(node.get());
  g.graphs.erase(graph);
  return CUDA_SUCCESS;
}

CUresult addNode(CUgraphNode* out, CUgraph graph, const CUgraphNode* dependencies, std::size_t count, GraphNode node) {
  if (out == nullptr || (count != 0 && dependencies == nullptr)) return CUDA_ERROR_INVALID_VALUE;
  auto& g = graphs();
  std::scoped_lock lock(g.mutex);
  Graph* found = g.graphs.find(graph);
  if (found == nullptr) return CUDA_ERROR_INVALID_VALUE;
  for (std::size_t i = 0; i < count; ++i) {
    auto it = g.owner.find(reinterpret_cast<const GraphNode*>(dependencies[i]));
    if (it == g.owner.end() || it->second != found) return CUDA_ERROR_INVALID_VALUE;
  }
  found->nodes.push_back(std::make_unique<GraphNode>(node));
  g.owner[found->nodes.back().get()] = found;
  *out = reinterpret_cast<CUgraphNode>(found->nodes.back().get());
  return CUDA_SUCCESS;
}

CUresult kernelNode(const CUDA_KERNEL_NODE_PARAMS* p, GraphNode& node) {
  if (p == nullptr) return CUDA_ERROR_INVALID_VALUE;
  node.kind = GraphNode::Kind::kKernel;
  node.function = p->func != nullptr ? p->func : reinterpret_cast<CUfunction>(p->kern);
  node.grid = {p->gridDimX, p->gridDimY, p->gridDimZ};
  node.block = {p->blockDimX, p->blockDimY, p->blockDimZ};
  node.sharedBytes = p->sharedMemBytes;
  return withFunction(node.function, [](Function&) { return CUDA_SUCCESS; });
}

CUresult graphAddKernelNode(CUgraphNode* out, CUgraph graph, const CUgraphNode* dependencies, std::size_t count,
                            const CUDA_KERNEL_NODE_PARAMS* p) {
  GraphNode node;
  if (CUresult error = kernelNode(p, node); error != CUDA_SUCCESS) return error;
  return addNode(out, graph, dependencies, count, node);
}

CUresult graphAddMemsetNode(CUgraphNode* out, CUgraph graph, const CUgraphNode* dependencies, std::size_t count,
                            const CUDA_MEMSET_NODE_PARAMS* p, CUcontext) {
  if (p == nullptr || (p->elementSize != 1 && p->elementSize != 2 && p->elementSize != 4)) return CUDA_ERROR_INVALID_VALUE;
  GraphNode node;
  node.kind = GraphNode::Kind::kMemset;
  node.memset = *p;
  return addNode(out, graph, dependencies, count, node);
}

CUresult graphAddMemcpyNode(CUgraphNode* out, CUgraph graph, const CUgraphNode* dependencies, std::size_t count,
                            const CUDA_MEMCPY3D* p, CUcontext) {
  if (p == nullptr || p->Depth != 1) return p == nullptr ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_SUPPORTED;
  GraphNode node;
  node.kind = GraphNode::Kind::kMemcpy;
  node.copy = *p;
  return addNode(out, graph, dependencies, count, node);
}

CUresult graphAddEmptyNode(CUgraphNode* out, CUgraph graph, const CUgraphNode* dependencies, std::size_t count) {
  return addNode(out, graph, dependencies, count, GraphNode{});
}

CUresult graphGetNodes(CUgraph graph, CUgraphNode* nodes, std::size_t* count) {
  if (count == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& g = graphs();
  std::scoped_lock lock(g.mutex);
  Graph* found = g.graphs.find(graph);
  if (found == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (nodes == nullptr) {
    *count = found->nodes.size();
    return CUDA_SUCCESS;
  }
  *count = std::min(*count, found->nodes.size());
  for (std::size_t i = 0; i < *count; ++i) nodes[i] = reinterpret_cast<CUgraphNode>(found->nodes[i].get());
  return CUDA_SUCCESS;
}

CUresult graphInstantiate(CUgraphExec* exec, CUgraph graph, unsigned long long) {
  if (exec == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto& g = graphs();
  std::scoped_lock lock(g.mutex);
  Graph* found = g.graphs.find(graph);
  if (found == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto made = std::make_unique<GraphExec>();
  for (const auto& node : found->nodes) {
    made->index[node.get()] = made->nodes.size();
    made->nodes.push_back(*node);
  }
  *exec = handleOf<CUgraphExec>(g.execs.add(std::move(made)));
  return CUDA_SUCCESS;
}

CUresult graphExecDestroy(CUgraphExec exec) {
  auto& g = graphs();
  std::scoped_lock lock(g.mutex);
  return g.execs.erase(exec) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult graphExecKernelNodeSetParams(CUgraphExec exec, CUgraphNode node, const CUDA_KERNEL_NODE_PARAMS* p) {
  GraphNode updated;
  if (CUresult error = kernelNode(p, updated); error != CUDA_SUCCESS) return error;
  auto& g = graphs();
  std::scoped_lock lock(g.mutex);
  GraphExec* found = g.execs.find(exec);
  if (found == nullptr) return CUDA_ERROR_INVALID_VALUE;
  auto it = found->index.find(reinterpret_cast<const GraphNode*>(node));
  if (it == found->index.end() || found->nodes[it->second].kind != GraphNode::Kind::kKernel) return CUDA_ERROR_INVALID_VALUE;
  found->nodes[it->second] = updated;
  return CUDA_SUCCESS;
}

// Whether [address, address + bytes) lies in memory the stand-in handed out and still holds (an
// allocation, a mapping, a module's variable), as a GPU's MMU would have it.
bool held(CUdeviceptr address, std::size_t bytes) {
  auto inside = [&](std::uintptr_t base, std::size_t size) {
    return address >= base && address - base <= size && bytes <= size - (address - base);
  };
  {
    auto& s = state();
    std::scoped_lock lock(s.mutex);
    if (auto after = s.allocations.upper_bound(address);
        after != s.allocations.begin() && inside(std::prev(after)->first, std::prev(after)->second.bytes)) {
      return true;
    }
    bool global = false;
    s.modules.forEach([&](const Module& module) {
      for (const auto& [name, storage] : module.globals) {
        global = global || inside(reinterpret_cast<std::uintptr_t>(storage.get()), module.globalSizes.at(name));
      }
    });
    if (global) return true;
  }
  auto& v = virtualMemory();
  std::scoped_lock lock(v.mutex);
  auto after = v.mappings.upper_bound(address);
  return after != v.mappings.begin() && inside(std::prev(after)->first, std::prev(after)->second.first);
}

// The worker checked every node's ranges when it was added, but the memory may have been freed
// since: a GPU faults then (CUDA_ERROR_ILLEGAL_ADDRESS), and so does the stand-in, rather than
// write into memory it gave back.
CUresult runNode(const GraphNode& node) {
  switch (node.kind) {
    case GraphNode::Kind::kKernel: return launch(node.function, node.grid, node.block, node.sharedBytes);
    case GraphNode::Kind::kMemset: {
      const auto& m = node.memset;
      for (std::size_t row = 0; row < m.height; ++row) {
        const CUdeviceptr to = m.dst + row * m.pitch;
        if (!held(to, m.width * m.elementSize)) return CUDA_ERROR_ILLEGAL_ADDRESS;
        CUresult error = m.elementSize == 1 ? fill<unsigned char>(to, static_cast<unsigned char>(m.value), m.width)
                         : m.elementSize == 2 ? fill<unsigned short>(to, static_cast<unsigned short>(m.value), m.width)
                                              : fill<unsigned int>(to, m.value, m.width);
        if (error != CUDA_SUCCESS) return error;
      }
      return CUDA_SUCCESS;
    }
    case GraphNode::Kind::kMemcpy: {
      const auto& c = node.copy;
      auto side = [](CUmemorytype type, CUdeviceptr device, const void* host) {
        return static_cast<std::byte*>(type == CU_MEMORYTYPE_DEVICE ? hostPointer(device) : const_cast<void*>(host));
      };
      std::byte* from = side(c.srcMemoryType, c.srcDevice, c.srcHost);
      std::byte* to = side(c.dstMemoryType, c.dstDevice, c.dstHost);
      const std::size_t srcPitch = c.srcPitch != 0 ? c.srcPitch : c.WidthInBytes;
      const std::size_t dstPitch = c.dstPitch != 0 ? c.dstPitch : c.WidthInBytes;
      for (std::size_t row = 0; row < c.Height; ++row) {
        std::byte* target = to + (c.dstY + row) * dstPitch + c.dstXInBytes;
        const std::byte* source = from + (c.srcY + row) * srcPitch + c.srcXInBytes;
        if (!held(reinterpret_cast<CUdeviceptr>(target), c.WidthInBytes) ||
            !held(reinterpret_cast<CUdeviceptr>(source), c.WidthInBytes)) {
          return CUDA_ERROR_ILLEGAL_ADDRESS;
        }
        std::memmove(target, source, c.WidthInBytes);
      }
      return CUDA_SUCCESS;
    }
    case GraphNode::Kind::kEmpty: return CUDA_SUCCESS;
  }
  return CUDA_ERROR_INVALID_VALUE;
}

CUresult graphLaunch(CUgraphExec exec, CUstream) {
  std::vector<GraphNode> nodes;
  {
    auto& g = graphs();
    std::scoped_lock lock(g.mutex);
    GraphExec* found = g.execs.find(exec);
    if (found == nullptr) return CUDA_ERROR_INVALID_VALUE;
    nodes = found->nodes;
  }
  for (const auto& node : nodes) {
    if (CUresult error = runNode(node); error != CUDA_SUCCESS) return error;
  }
  return CUDA_SUCCESS;
}

CUresult graphUpload(CUgraphExec exec, CUstream) {
  auto& g = graphs();
  std::scoped_lock lock(g.mutex);
  return g.execs.find(exec) != nullptr ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

// ---- the table ---------------------------------------------------------------------------------

api::cu::DriverTable makeTable() {
  api::cu::DriverTable t;
  t.cuInit = guarded<init>;
  t.cuDriverGetVersion = guarded<driverGetVersion>;
  t.cuDeviceGetCount = guarded<deviceGetCount>;
  t.cuDeviceGet = guarded<deviceGet>;
  t.cuDeviceGetName = guarded<deviceGetName>;
  t.cuDeviceTotalMem_v2 = guarded<deviceTotalMem>;
  t.cuDeviceGetUuid_v2 = guarded<deviceGetUuid>;
  t.cuDeviceGetPCIBusId = guarded<deviceGetPciBusId>;
  t.cuDeviceGetAttribute = guarded<deviceGetAttribute>;
  t.cuDeviceCanAccessPeer = guarded<deviceCanAccessPeer>;
  t.cuDeviceGetP2PAttribute = guarded<deviceGetP2PAttribute>;

  t.cuMemAlloc_v2 = guarded<memAlloc>;
  t.cuMemAllocPitch_v2 = guarded<memAllocPitch>;
  t.cuMemFree_v2 = guarded<memFree>;
  // Stream-ordered allocation from the default pool: at once, as all stream work is (no pools).
  t.cuMemAllocAsync = guarded<onStream<memAlloc>>;
  t.cuMemFreeAsync = guarded<onStream<memFree>>;
  t.cuMemGetAddressRange_v2 = guarded<memGetAddressRange>;
  t.cuMemGetInfo_v2 = guarded<memGetInfo>;
  t.cuMemHostRegister_v2 = guarded<memHostRegister>;
  t.cuMemHostUnregister = guarded<memHostUnregister>;
  t.cuMemHostGetDevicePointer_v2 = guarded<memHostGetDevicePointer>;
  t.cuGraphCreate = guarded<graphCreate>;
  t.cuGraphDestroy = guarded<graphDestroy>;
  t.cuGraphAddKernelNode_v2 = guarded<graphAddKernelNode>;
  t.cuGraphAddMemsetNode = guarded<graphAddMemsetNode>;
  t.cuGraphAddMemcpyNode = guarded<graphAddMemcpyNode>;
  t.cuGraphAddEmptyNode = guarded<graphAddEmptyNode>;
  t.cuGraphGetNodes = guarded<graphGetNodes>;
  t.cuGraphInstantiateWithFlags = guarded<graphInstantiate>;
  t.cuGraphExecDestroy = guarded<graphExecDestroy>;
  t.cuGraphExecKernelNodeSetParams_v2 = guarded<graphExecKernelNodeSetParams>;
  t.cuGraphLaunch = guarded<graphLaunch>;
  t.cuGraphUpload = guarded<graphUpload>;
  t.cuMemGetAllocationGranularity = guarded<memGetAllocationGranularity>;
  t.cuMemAddressReserve = guarded<memAddressReserve>;
  t.cuMemAddressFree = guarded<memAddressFree>;
  t.cuMemCreate = guarded<memCreate>;
  t.cuMemRelease = guarded<memRelease>;
  t.cuMemMap = guarded<memMap>;
  t.cuMemUnmap = guarded<memUnmap>;
  t.cuMemSetAccess = guarded<memSetAccess>;
  t.cuMemGetAccess = guarded<memGetAccess>;
  t.cuMemGetAllocationPropertiesFromHandle = guarded<memGetAllocationProperties>;

  t.cuMemcpyHtoD_v2 = guarded<memcpyHtoD>;
  t.cuMemcpyDtoH_v2 = guarded<memcpyDtoH>;
  t.cuMemcpyDtoD_v2 = guarded<memcpyDtoD>;
  t.cuMemcpy = guarded<memcpyDtoD>;  // unified addressing: a copy between any two addresses
  t.cuMemcpyHtoDAsync_v2 = guarded<onStream<memcpyHtoD>>;
  t.cuMemcpyDtoHAsync_v2 = guarded<onStream<memcpyDtoH>>;
  t.cuMemcpyDtoDAsync_v2 = guarded<onStream<memcpyDtoD>>;
  t.cuMemcpyAsync = guarded<onStream<memcpyDtoD>>;
  t.cuMemsetD8_v2 = guarded<fill<unsigned char>>;
  t.cuMemsetD16_v2 = guarded<fill<unsigned short>>;
  t.cuMemsetD32_v2 = guarded<fill<unsigned int>>;
  t.cuMemsetD8Async = guarded<onStream<fill<unsigned char>>>;
  t.cuMemsetD16Async = guarded<onStream<fill<unsigned short>>>;
  t.cuMemsetD32Async = guarded<onStream<fill<unsigned int>>>;

  t.cuDevicePrimaryCtxRetain = guarded<primaryCtxRetain>;
  t.cuDevicePrimaryCtxRelease_v2 = guarded<primaryCtxRelease>;
  t.cuDevicePrimaryCtxReset_v2 = guarded<primaryCtxReset>;
  t.cuDevicePrimaryCtxGetState = guarded<primaryCtxGetState>;
  t.cuDevicePrimaryCtxSetFlags_v2 = guarded<primaryCtxSetFlags>;
  t.cuCtxCreate_v4 = guarded<ctxCreate>;
  t.cuCtxDestroy_v2 = guarded<ctxDestroy>;
  t.cuCtxSetCurrent = guarded<ctxSetCurrent>;
  t.cuCtxGetCurrent = guarded<ctxGetCurrent>;
  t.cuCtxPushCurrent_v2 = guarded<ctxPushCurrent>;
  t.cuCtxPopCurrent_v2 = guarded<ctxPopCurrent>;
  t.cuCtxGetDevice = guarded<ctxGetDevice>;
  t.cuCtxSynchronize = guarded<ctxSynchronize>;
  t.cuCtxSynchronize_v2 = guarded<ctxSynchronizeOf>;
  t.cuStreamIsCapturing = guarded<streamIsCapturing>;
  t.cuMemcpy2D_v2 = guarded<memcpy2D>;
  t.cuMemcpy2DAsync_v2 = guarded<memcpy2DAsync>;
  t.cuStreamGetCaptureInfo_v3 = guarded<streamCaptureInfo>;
  t.cuCtxGetApiVersion = guarded<ctxGetApiVersion>;
  t.cuCtxGetId = guarded<ctxGetId>;
  t.cuCtxGetLimit = guarded<ctxGetLimit>;
  t.cuCtxSetLimit = guarded<ctxSetLimit>;
  t.cuCtxGetCacheConfig = guarded<ctxGet<CUfunc_cache, &Context::cacheConfig>>;
  t.cuCtxSetCacheConfig = guarded<ctxSetCacheConfig>;
  t.cuCtxGetFlags = guarded<ctxGet<unsigned int, &Context::flags>>;
  t.cuCtxSetFlags = guarded<ctxSetFlags>;
  t.cuCtxGetStreamPriorityRange = guarded<ctxGetStreamPriorityRange>;

  t.cuStreamCreate = guarded<streamCreate>;
  t.cuStreamCreateWithPriority = guarded<streamCreateWithPriority>;
  t.cuStreamDestroy_v2 = guarded<streamDestroy>;
  t.cuStreamSynchronize = guarded<streamSynchronize>;
  t.cuStreamQuery = guarded<streamSynchronize>;
  t.cuStreamWaitEvent = guarded<streamWaitEvent>;
  t.cuStreamGetPriority = guarded<streamGet<int, &Stream::priority>>;
  t.cuStreamGetFlags = guarded<streamGet<unsigned int, &Stream::flags>>;
  t.cuStreamGetId = guarded<streamGet<unsigned long long, &Stream::id>>;
  t.cuEventCreate = guarded<eventCreate>;
  t.cuEventDestroy_v2 = guarded<eventDestroy>;
  t.cuEventRecord = guarded<eventRecord>;
  t.cuEventRecordWithFlags = guarded<eventRecordWithFlags>;
  t.cuEventSynchronize = guarded<eventSynchronize>;
  t.cuEventQuery = guarded<eventSynchronize>;
  t.cuEventElapsedTime_v2 = guarded<eventElapsedTime>;

  t.cuModuleLoadData = guarded<moduleLoadData>;
  t.cuModuleLoadDataEx = guarded<moduleLoadDataEx>;
  t.cuLibraryLoadData = guarded<libraryLoadData>;
  t.cuModuleUnload = guarded<moduleUnload>;
  t.cuLibraryUnload = guarded<libraryUnload>;
  t.cuLibraryGetModule = guarded<libraryGetModule>;
  t.cuModuleGetFunction = guarded<moduleGetFunction>;
  t.cuLibraryGetKernel = guarded<libraryGetKernel>;
  t.cuModuleGetGlobal_v2 = guarded<getGlobal<CUmodule>>;
  t.cuLibraryGetGlobal = guarded<getGlobal<CUlibrary>>;

  t.cuKernelGetFunction = guarded<kernelGetFunction>;
  t.cuFuncGetParamInfo = guarded<paramInfo<CUfunction>>;
  t.cuKernelGetParamInfo = guarded<paramInfo<CUkernel>>;
  t.cuFuncGetName = guarded<getName<CUfunction>>;
  t.cuModuleGetFunctionCount = guarded<moduleFunctionCount>;
  t.cuModuleEnumerateFunctions = guarded<moduleEnumerateFunctions>;
  t.cuKernelGetName = guarded<getName<CUkernel>>;
  t.cuFuncGetAttribute = guarded<getAttribute<CUfunction>>;
  t.cuKernelGetAttribute = guarded<kernelGetAttribute>;
  t.cuFuncSetAttribute = guarded<setAttribute<CUfunction>>;
  t.cuKernelSetAttribute = guarded<kernelSetAttribute>;
  t.cuFuncSetCacheConfig = guarded<funcSetCacheConfig>;

  t.cuLaunchKernel = guarded<launchKernel>;
  t.cuLaunchKernelEx = guarded<launchKernelEx>;
  t.cuLaunchCooperativeKernel = guarded<launchCooperativeKernel>;
  t.cuOccupancyMaxActiveBlocksPerMultiprocessor = guarded<occupancy>;
  t.cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags = guarded<occupancyWithFlags>;
  return t;
}

}  // namespace

const api::cu::DriverTable& standInDriver() {
  static const api::cu::DriverTable table = makeTable();
  return table;
}

}  // namespace flyt::backend::cu
