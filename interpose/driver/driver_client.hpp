// The driver library's session client (Flyt's libcuda.so.1): SessionClient (session_client.hpp) with
// the driver's method ids (api/cuda.toml) and CUresult, plus what the application's process keeps
// about its session so that queries need no round trip:
//
//   - the device snapshot the worker sends once (attributes, names, UUIDs, memory, PCI ids);
//   - contexts: the id of each device's primary context and its retain count, every context the
//     session created and its device, each thread's stack of current contexts (cuCtxGetCurrent,
//     cuCtxSetCurrent, cuCtxPushCurrent and cuCtxPopCurrent are answered here), the context-local
//     storage NVIDIA's runtime keeps per context (export_tables.cpp);
//   - the parameter layout of every function and kernel the session looked up (launch.cpp packs
//     kernelParams by it);
//   - the session's device allocations (pointer queries, unified-address copies).
//
// Before a call is sent, DriverCall makes the worker's current context the calling thread's: a
// flytSetContext call is batched ahead of it whenever the thread's context differs from the last
// one the worker was told.
//
// Threading: every function may be called from any thread; the state has its own mutex, taken
// before (never while holding) the client's.
#pragma once

#include <cuda.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "flyt/api/codec.hpp"
#include "flyt/api/cu_device_snapshot.hpp"
#include "flyt/api/cu_methods.hpp"
#include "session_client.hpp"

namespace flyt::interpose::cu {

using api::cu::Method;

struct CuTraits {
  using Method = api::cu::Method;
  using Error = CUresult;
  static constexpr Error kSuccess = CUDA_SUCCESS;
  static constexpr Error kDevicesUnavailable = CUDA_ERROR_DEVICE_UNAVAILABLE;
  static constexpr Error kUnknown = CUDA_ERROR_UNKNOWN;
  static constexpr transport::SessionApi kApi = transport::SessionApi::kDriver;
  static Error fromStatus(wire::TransportStatus status, std::int32_t verbatim) noexcept;
  // The driver API has no "last error": an earlier batched call's failure is returned by the next
  // call that synchronises (DriverCall), and logged.
  static void noteEarlierFailure(Error error) noexcept;
};

using CuClient = SessionClient<CuTraits>;
using Outcome = CuClient::Outcome;

// The parameter block of a function or kernel: each parameter's offset and size, in order.
struct ParamLayout {
  struct Param {
    std::uint32_t offset;
    std::uint32_t size;
  };
  std::vector<Param> params;
  std::uint32_t bytes = 0;  // the whole block (last offset + size)
};

// A context the application may make current.
struct ContextInfo {
  CUdevice device = 0;
  bool primary = false;
};

class DriverState {
 public:
  static DriverState& get() noexcept;

  // Connects (first call only) and fetches the device snapshot. CUDA_ERROR_DEVICE_UNAVAILABLE when
  // no session could be had (the reason is logged once).
  [[nodiscard]] CUresult init() noexcept;
  // The snapshot; null until init() succeeded.
  [[nodiscard]] const api::cu::DeviceSnapshot* devices() const noexcept;
  [[nodiscard]] const api::cu::DeviceInfo* device(CUdevice ordinal) const noexcept;

  // ---- contexts ----
  [[nodiscard]] CUcontext current() const noexcept;  // the calling thread's
  void setCurrent(CUcontext context) noexcept;       // replaces the top of the thread's stack
  void push(CUcontext context) noexcept;
  [[nodiscard]] CUcontext pop() noexcept;  // null when the stack is empty
  [[nodiscard]] std::optional<ContextInfo> context(CUcontext context) const noexcept;
  void addContext(CUcontext context, ContextInfo info) noexcept;
  void removeContext(CUcontext context) noexcept;  // also from every thread's stack it is on
  // The primary context of `device` (0: none retained yet) and its retain count.
  [[nodiscard]] CUcontext primary(CUdevice device) const noexcept;
  void setPrimary(CUdevice device, CUcontext context) noexcept;
  int retainPrimary(CUdevice device) noexcept;   // returns the new count
  int releasePrimary(CUdevice device) noexcept;  // returns the new count (not below 0)

  // ---- context-local storage (export_tables.cpp): (context, key) -> (value, destructor) ----
  using StorageDestructor = void (*)(CUcontext, void*, void*);
  void storagePut(CUcontext context, void* key, void* value, StorageDestructor destructor) noexcept;
  bool storageDelete(CUcontext context, void* key) noexcept;
  [[nodiscard]] std::optional<void*> storageGet(CUcontext context, void* key) const noexcept;
  // Runs the destructors of the context's entries (its state goes away: destroy, primary reset or
  // last release) and forgets them. Called without the state's lock held during the calls.
  void storageDestroy(CUcontext context) noexcept;

  // ---- functions and kernels ----
  void setLayout(std::uint64_t handle, ParamLayout layout) noexcept;
  [[nodiscard]] std::optional<ParamLayout> layout(std::uint64_t handle) const noexcept;
  void setName(std::uint64_t handle, std::string name) noexcept;
  [[nodiscard]] const char* name(std::uint64_t handle) const noexcept;  // stable until the process ends

  // ---- device allocations ----
  // `managed`: a cuMemAllocManaged range (managed_memory.cpp), device memory to every copy path
  // and pointer query here, also mapped as host memory of the process.
  void allocated(CUdeviceptr base, std::size_t bytes, bool managed = false) noexcept;
  void released(CUdeviceptr base) noexcept;
  // A cuMemMap'ed range is an allocation here, but a copy into it fails until cuMemSetAccess
  // granted access to it (virtual_memory.cpp).
  void mapped(CUdeviceptr base, std::size_t bytes) noexcept;
  // `readWrite`: cuMemSetAccess granted read-write access to the range; else it took it away.
  void accessSet(CUdeviceptr base, std::size_t bytes, bool readWrite) noexcept;
  // [address, address + bytes) lies inside one allocation, not managed, accessible: a copy there
  // cannot fail for its destination (copies.cpp sends small ones without waiting).
  [[nodiscard]] bool vouchesFor(CUdeviceptr address, std::size_t bytes) const noexcept;
  // The allocation holding `address`: its base and size.
  [[nodiscard]] std::optional<std::pair<CUdeviceptr, std::size_t>> allocation(CUdeviceptr address) const noexcept;
  // Whether `address` lies in a managed allocation (CU_POINTER_ATTRIBUTE_IS_MANAGED).
  [[nodiscard]] bool isManaged(CUdeviceptr address) const noexcept;

  // ---- stream state: cuStreamQuery on a stream that is known idle costs no round trip ----
  // Each stream (the per-thread default stream per thread) has a generation, counted up by every
  // call that queues work on it once the call is batched (StreamWork); a query or synchronisation
  // that succeeded records the generation it read before it was sent as idle. Busy is the safe answer: a stream never seen idle, or with work since, is asked.
  // The legacy default stream (0, CU_STREAM_LEGACY) synchronises with the blocking streams, so it
  // counts as busy after work on any stream.
  void streamBusy(CUstream stream) noexcept;
  [[nodiscard]] std::uint64_t streamGeneration(CUstream stream) const noexcept;
  [[nodiscard]] bool streamIdle(CUstream stream, std::uint64_t generation) const noexcept;
  void streamIdled(CUstream stream, std::uint64_t generation) noexcept;

  // Counted up whenever a context's state goes away (destroyed, its primary reset or released for
  // the last time): answers kept per context (a kernel's function in it) are from an older epoch.
  std::atomic<std::uint64_t>& contextEpoch() noexcept { return m_contextEpoch; }

  // The context the worker runs calls in, as it was last told (DriverCall keeps it).
  std::uint64_t& workerContext() noexcept { return m_workerContext; }
  // The first failure of a batched call that came back with the reply of a call that does not
  // synchronise: returned by the next call that does, as the driver reports asynchronous errors.
  std::atomic<int>& pendingError() noexcept { return m_pendingError; }
  // Set while some managed memory is host-resident or has not yet been seen by a call: DriverCall
  // then gives managed memory back to the device (managed_memory.cpp) before its call. Read
  // relaxed on every call; written under managed_memory.cpp's mutex.
  std::atomic<bool>& managedHandBackDue() noexcept { return m_managedHandBackDue; }

 private:
  DriverState() = default;
  mutable std::mutex m_mutex;
  bool m_initTried = false;
  CUresult m_initResult = CUDA_ERROR_NOT_INITIALIZED;
  std::vector<std::byte> m_snapshotBytes;
  const api::cu::DeviceSnapshot* m_snapshot = nullptr;
  std::map<CUcontext, ContextInfo> m_contexts;
  std::map<CUdevice, std::pair<CUcontext, int>> m_primaries;
  struct Stored {
    void* value;
    StorageDestructor destructor;
  };
  std::map<std::pair<CUcontext, void*>, Stored> m_storage;
  std::map<std::uint64_t, ParamLayout> m_layouts;
  std::map<std::uint64_t, std::string> m_names;
  std::map<CUdeviceptr, std::size_t> m_allocations;
  std::set<CUdeviceptr> m_managedBases;  // those of m_allocations that are managed
  std::set<CUdeviceptr> m_inaccessible;  // mappings of m_allocations not yet granted access
  struct StreamState {
    std::uint64_t generation = 1;
    std::uint64_t idleAt = 0;  // the generation last seen idle (0: never)
  };
  std::map<std::pair<std::uintptr_t, std::uint64_t>, StreamState> m_streams;  // (stream, thread for per-thread)
  StreamState m_anyStream;  // counted up by work on every stream: the legacy default stream's
  std::uint64_t m_workerContext = 0;  // guarded by the client's session, not m_mutex
  std::atomic<int> m_pendingError{CUDA_SUCCESS};
  std::atomic<std::uint64_t> m_contextEpoch{0};
  std::atomic<bool> m_managedHandBackDue{false};
};

// One call, or a few, through the session with the worker's context matching the calling
// thread's. Holds the client's session (its mutex) while it lives. Before it takes the session it
// gives managed memory back to the device (managed_memory.cpp): after any CUDA call the device
// owns managed memory again.
class DriverCall {
 public:
  DriverCall();
  ~DriverCall();
  DriverCall(const DriverCall&) = delete;
  DriverCall& operator=(const DriverCall&) = delete;
  // Whether the calling thread holds the session through a DriverCall now (a page fault of managed
  // memory on such a thread cannot be served: managed_memory.cpp).
  [[nodiscard]] static bool heldByThisThread() noexcept;
  [[nodiscard]] CuClient::Session& session() noexcept { return m_session; }
  // The call waited for: replies to earlier failed batched calls are returned when `reportEarlier`
  // (a call that synchronises), else logged.
  [[nodiscard]] Outcome call(Method method, std::span<const std::byte> args, std::span<const std::byte> payload = {},
                             std::optional<RegionBulk> region = std::nullopt, bool reportEarlier = false) noexcept;
  [[nodiscard]] CUresult enqueue(Method method, std::span<const std::byte> args,
                                 std::span<const std::byte> payload = {},
                                 std::optional<RegionBulk> region = std::nullopt) noexcept;
  // What call() does with a reply: for a reply collected through session() directly (a pipelined
  // copy's chunks), the same rule for errors of earlier batched calls.
  void settle(Outcome& outcome, bool reportEarlier) noexcept;

 private:
  CuClient::Session m_session;
};

// Work on a stream, marked when the call that queues it has been batched (when this goes out of
// scope, after the call returned): a synchronisation or query another thread sent before that
// must not be taken as having seen the stream idle after it. Marking it before the call was
// queued would let such a synchronisation record the new generation as idle.
class StreamWork {
 public:
  explicit StreamWork(CUstream stream) noexcept : m_stream(stream) {}
  ~StreamWork() { DriverState::get().streamBusy(m_stream); }
  StreamWork(const StreamWork&) = delete;
  StreamWork& operator=(const StreamWork&) = delete;

 private:
  CUstream m_stream;
};

// Stream 0 of a per-thread-default-stream export (_ptsz/_ptds) is the calling thread's stream.
[[nodiscard]] inline CUstream perThread(CUstream stream) noexcept {
  return stream == nullptr ? CU_STREAM_PER_THREAD : stream;
}

// A handle as it travels (an id, or an unmapped kind's value).
template <class Handle>
[[nodiscard]] std::uint64_t wireHandle(Handle handle) noexcept {
  if constexpr (std::is_pointer_v<Handle>) {
    return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(handle));
  } else {
    return static_cast<std::uint64_t>(handle);
  }
}

}  // namespace flyt::interpose::cu
