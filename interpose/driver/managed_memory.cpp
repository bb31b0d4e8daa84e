// Managed memory (cuMemAllocManaged) in the application's process, built on the virtual-memory
// calls the worker already serves, with host access through page faults. Decisions:
//
// Placement. A managed range is device memory of the session at an address that is also host
// memory of this process. The process finds a free, 2 MiB-aligned range of its own (a PROT_NONE
// placeholder in the middle of the largest hole of its address space, where the worker has nothing
// either; the last try wherever mmap puts it) and asks the worker to reserve exactly there
// (cuMemAddressReserve's hint); when the worker's driver places it elsewhere, the process maps
// there only if nothing of its own is there (MAP_FIXED_NOREPLACE). A refused address stays reserved
// on the worker until the allocation is placed, so that the next try gets another; after
// kPlacementTries the allocation fails with CUDA_ERROR_OUT_OF_MEMORY and a logged reason. Sizes are
// rounded up to the 2 MiB granularity of cuMemCreate; the worker charges cuMemCreate to the quota.
//
// Two views of one memfd. The application view is the managed address itself (MAP_SHARED, its
// protection follows ownership); the backing view elsewhere is always read-write and is the only
// one Flyt's own code touches (fetches land there, write-backs are sent from there), so Flyt never
// faults on managed memory itself.
//
// Ownership, per 64 KiB chunk: device-owned (PROT_NONE), host-clean (PROT_READ) or host-dirty
// (PROT_READ|PROT_WRITE). A SIGSEGV in a managed range synchronises the context (the device may
// still be writing), fetches the chunk and up to kReadAhead - 1 following device-owned ones into the
// backing view, and opens the application view: read-only for a read (and the read-ahead),
// read-write and dirty for a write (on x86-64 the page-fault error code says which; elsewhere every
// fault counts as a write). A write to a host-clean chunk only opens it and marks it dirty. Until
// the first call after the allocation the device cannot have written, so no fetch is needed: the
// device range is zeroed at allocation, as the memfd is.
//
// The rule: after any CUDA call the device owns managed memory again, as on devices without
// concurrent managed access (CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS is 0 through Flyt).
// DriverCall's constructor (driver_client.cpp), before it takes the session, calls
// handBackManagedMemory whenever DriverState::managedHandBackDue() is set (one relaxed load
// otherwise): every host-resident chunk is first made PROT_NONE (a concurrent host access faults
// and waits on this file's mutex), then the dirty ones are queued as host-to-device copies from the
// backing view, ahead of the call that follows. The hand-back and the fault handler make calls of
// their own on a thread marked "inside" (t_inside), which neither hands back again nor serves faults.
//
// Lock order: this file's mutex, then the session's. A fault on a thread that holds the session
// (DriverCall::heldByThisThread: Flyt's own code touching a managed address as host memory) cannot
// be served without deadlock: it is logged and the process aborts. Flyt's copy paths classify
// managed addresses as device memory (DriverState::allocation), so that does not happen.
//
// The fault handler is installed at the first cuMemAllocManaged and chains every fault outside a
// managed range (and one it could not serve) to the handler installed before it; a previous
// SIG_DFL or SIG_IGN is restored, so that the access faults again and ends the process as it would
// have. An application that installs a SIGSEGV handler later must chain to the previous one.
// System calls into device-owned managed pages (read(2) into them) fail with EFAULT rather than
// fault. Module __managed__ variables are not served (cuLibraryGetManaged is unsupported).
//
// cuMemFree_v2 and cuMemGetAddressRange_v2 have hand-written client sides here ("client" handler in
// api/cuda.toml): managed bases are answered in the process, every other pointer is forwarded to the
// worker's generated handler with its checks.
#include <cuda.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <expected>
#include <string>
#include <map>
#include <mutex>
#include <span>
#include <vector>

#include "driver_client.hpp"
#include "driver_internal.hpp"
#include "flyt/transport/log.hpp"
#include "flyt/transport/segment.hpp"
#include "flyt/transport/sys.hpp"
#include "forward.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {
namespace {

using transport::sys;

constexpr std::size_t kGranularity = std::size_t{2} << 20;  // cuMemCreate's on the GPUs Flyt serves
constexpr std::size_t kChunk = kManagedChunkBytes;
constexpr std::size_t kReadAhead = 4;  // chunks fetched by one fault: sequential host reads are the common case
constexpr int kPlacementTries = 4;
static_assert(kGranularity % kChunk == 0);

spdlog::logger& log() { return flyt::logger("interpose"); }

enum class Chunk : std::uint8_t { kDevice, kClean, kDirty };

struct Range {
  std::size_t bytes = 0;   // as the application asked
  std::size_t mapped = 0;  // rounded up to kGranularity: the device range and both views
  std::byte* backing = nullptr;
  CUmemGenericAllocationHandle handle = 0;  // the worker's id of the physical memory
  CUcontext context = nullptr;              // current at allocation: the fault handler's calls run in it
  bool deviceMayHaveWritten = false;        // a call went to the worker since the allocation
  std::vector<Chunk> chunks;
  std::size_t hostChunks = 0;  // chunks not device-owned
};

struct Managed {
  std::mutex mutex;
  std::map<CUdeviceptr, Range> ranges;  // by base
  bool handlerInstalled = false;
  struct sigaction previous {};  // written once, before the handler is installed
};

Managed& managed() noexcept {
  static auto* const state = new Managed;  // leaked: faults may come during exit
  return *state;
}

// This thread is in this file's code: no hand-back, no fault service (see the top).
thread_local bool t_inside = false;

class Inside {
 public:
  Inside() noexcept : m_was(t_inside) { t_inside = true; }
  ~Inside() { t_inside = m_was; }
  Inside(const Inside&) = delete;
  Inside& operator=(const Inside&) = delete;

 private:
  bool m_was;
};

// Makes `context` the calling thread's while it lives (the fault may come on a thread with none).
class WithContext {
 public:
  explicit WithContext(CUcontext context) noexcept { DriverState::get().push(context); }
  ~WithContext() { (void)DriverState::get().pop(); }
  WithContext(const WithContext&) = delete;
  WithContext& operator=(const WithContext&) = delete;
};

std::byte* appView(CUdeviceptr base) noexcept { return reinterpret_cast<std::byte*>(static_cast<std::uintptr_t>(base)); }

std::size_t roundUp(std::size_t value, std::size_t multiple) noexcept { return (value + multiple - 1) / multiple * multiple; }

template <class T>
std::span<const std::byte> bytesOf(const T& value) noexcept {
  return {reinterpret_cast<const std::byte*>(&value), sizeof(T)};
}

// An error the application did not ask for now (a kernel's failure seen by the fault handler's
// synchronisation): reported by its next synchronising call, as the driver would.
void keepForLater(CUresult error) noexcept {
  int none = CUDA_SUCCESS;
  if (error != CUDA_SUCCESS) DriverState::get().pendingError().compare_exchange_strong(none, static_cast<int>(error));
}

// ---- system calls --------------------------------------------------------------------------------

transport::Result<void*> mapMemory(const char* what, void* at, std::size_t bytes, int protection, int flags, int fd) {
  auto mapped = sys(what, [&] {
    void* p = ::mmap(at, bytes, protection, flags, fd, 0);
    return p == MAP_FAILED ? std::intptr_t{-1} : reinterpret_cast<std::intptr_t>(p);
  });
  if (!mapped) return std::unexpected(mapped.error());
  return reinterpret_cast<void*>(*mapped);
}

void unmapMemory(void* at, std::size_t bytes) noexcept {
  if (auto done = sys("munmap", [&] { return ::munmap(at, bytes); }); !done) {
    log().warn("managed memory: {}", done.error().describe());
  }
}

bool protect(CUdeviceptr base, std::size_t firstChunk, std::size_t count, int protection) noexcept {
  if (count == 0) return true;
  auto done = sys("mprotect", [&] { return ::mprotect(appView(base) + firstChunk * kChunk, count * kChunk, protection); });
  if (!done) log().error("managed memory at {:#x}: {}", base, done.error().describe());
  return done.has_value();
}

// ---- the worker's side of a range ---------------------------------------------------------------

std::expected<CUdeviceptr, CUresult> reserveOnWorker(std::size_t bytes, CUdeviceptr hint) noexcept {
  DriverCall call;
  auto outcome = call.call(Method::cuMemAddressReserve, pack(bytes, kGranularity, hint, 0));
  if (outcome.error != CUDA_SUCCESS) return std::unexpected(outcome.error);
  std::uint64_t base = 0;
  api::ArgReader reader(outcome.results);
  if (!reader.get(base) || base == 0 || base % kGranularity != 0) return std::unexpected(CUDA_ERROR_UNKNOWN);
  return base;
}

void freeOnWorker(CUdeviceptr base, std::size_t bytes) noexcept {
  DriverCall call;
  if (CUresult error = call.call(Method::cuMemAddressFree, pack(base, bytes)).error; error != CUDA_SUCCESS) {
    log().warn("managed memory: freeing the reservation {:#x} on the worker failed with CUresult {}", base,
               static_cast<int>(error));
  }
}

// Physical memory of `device` mapped read-write at [base, base + bytes), then zeroed (the host view
// starts as the memfd's zeros). Undoes what it did when a step fails.
CUresult backOnWorker(CUdeviceptr base, std::size_t bytes, CUdevice device, CUmemGenericAllocationHandle* handle) noexcept {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device;
  {
    DriverCall call;
    auto created = call.call(Method::cuMemCreate, pack(bytes, 0), bytesOf(prop));
    if (created.error != CUDA_SUCCESS) return created.error;
    api::ArgReader reader(created.results);
    if (!reader.get(*handle) || *handle == 0) return CUDA_ERROR_UNKNOWN;
    CUresult error = call.call(Method::cuMemMap, pack(base, bytes, 0, *handle, 0)).error;
    if (error == CUDA_SUCCESS) {
      CUmemAccessDesc access{};
      access.location = prop.location;
      access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
      error = call.call(Method::cuMemSetAccess, pack(base, bytes, 1), bytesOf(access)).error;
      if (error != CUDA_SUCCESS) (void)call.call(Method::cuMemUnmap, pack(base, bytes));
    }
    if (error != CUDA_SUCCESS) {
      (void)call.call(Method::cuMemRelease, pack(*handle));
      return error;
    }
  }
  // After the call above is gone: forward takes the session itself.
  return forward<Method::cuMemsetD8_v2>(base, static_cast<unsigned char>(0), bytes);
}

// ---- placement ----------------------------------------------------------------------------------

// A free range of this process, 2 MiB-aligned, held PROT_NONE: for the first tries inside the
// largest hole (transport::addressInLargestHole: its middle, then lower each try), then wherever mmap
// puts it.
transport::Result<CUdeviceptr> probeFreeRange(std::size_t bytes, int attempt) noexcept {
  if (auto candidate = transport::addressInLargestHole(bytes, kGranularity, attempt); candidate && attempt < kPlacementTries - 1) {
    auto held = mapMemory("mmap (placeholder)", appView(*candidate), bytes, PROT_NONE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1);
    if (held && *held == appView(*candidate)) return *candidate;
    if (held) unmapMemory(*held, bytes);  // a kernel without MAP_FIXED_NOREPLACE put it elsewhere
  }
  auto space = mapMemory("mmap (probe)", nullptr, bytes + kGranularity, PROT_NONE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1);
  if (!space) return std::unexpected(space.error());
  const auto start = reinterpret_cast<std::uintptr_t>(*space);
  const std::uintptr_t base = roundUp(start, kGranularity);
  if (base > start) unmapMemory(*space, base - start);
  if (const std::uintptr_t tail = start + kGranularity - base; tail > 0) unmapMemory(appView(base + bytes), tail);
  return base;
}

// Reserves a device range at an address that the application view of `fd` then occupies.
std::expected<CUdeviceptr, CUresult> place(std::size_t bytes, int fd) noexcept {
  std::vector<CUdeviceptr> refused;  // taken in this process: held on the worker until we are done
  std::expected<CUdeviceptr, CUresult> placed = std::unexpected(CUDA_ERROR_OUT_OF_MEMORY);
  for (int attempt = 0; attempt < kPlacementTries; ++attempt) {
    auto hint = probeFreeRange(bytes, attempt);
    if (!hint) {
      log().error("cuMemAllocManaged: no free address range of {} bytes in this process: {}", bytes,
                  hint.error().describe());
      break;
    }
    auto base = reserveOnWorker(bytes, *hint);
    if (!base) {
      unmapMemory(appView(*hint), bytes);
      placed = std::unexpected(base.error());
      break;
    }
    if (*base != *hint) log().debug("cuMemAllocManaged: the worker reserved {:#x} for the hint {:#x}", *base, *hint);
    // Over our own placeholder when the worker took the hint; elsewhere only where nothing is.
    const int flags = MAP_SHARED | (*base == *hint ? MAP_FIXED : MAP_FIXED_NOREPLACE);
    if (*base != *hint) unmapMemory(appView(*hint), bytes);
    auto view = mapMemory("mmap (managed view)", appView(*base), bytes, PROT_NONE, flags, fd);
    if (view && *view == appView(*base)) {
      placed = *base;
      break;
    }
    if (view) unmapMemory(*view, bytes);  // a kernel without MAP_FIXED_NOREPLACE put it elsewhere
    if (*base == *hint) unmapMemory(appView(*hint), bytes);
    refused.push_back(*base);
  }
  for (const CUdeviceptr base : refused) freeOnWorker(base, bytes);
  if (!placed && static_cast<int>(refused.size()) == kPlacementTries) {
    std::string tried;
    for (const CUdeviceptr base : refused) tried += fmt::format(" {:#x}", base);
    log().error("cuMemAllocManaged: the worker's device addresses for {} bytes were taken in this process {} times:{}",
                bytes, kPlacementTries, tried);
  }
  return placed;
}

// Both views of a new memfd of `bytes`, the application view at the device range's address.
struct Views {
  CUdeviceptr base = 0;
  std::byte* backing = nullptr;
};

std::expected<Views, CUresult> mapViews(std::size_t bytes) noexcept {
  auto fd = sys("memfd_create", [] { return ::memfd_create("flyt-managed", MFD_CLOEXEC); });
  if (!fd) {
    log().error("cuMemAllocManaged: {}", fd.error().describe());
    return std::unexpected(CUDA_ERROR_OUT_OF_MEMORY);
  }
  std::expected<Views, CUresult> views = std::unexpected(CUDA_ERROR_OUT_OF_MEMORY);
  if (auto sized = sys("ftruncate", [&] { return ::ftruncate(*fd, static_cast<off_t>(bytes)); }); !sized) {
    log().error("cuMemAllocManaged: {}", sized.error().describe());
  } else if (auto backing = mapMemory("mmap (backing view)", nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, *fd);
             !backing) {
    log().error("cuMemAllocManaged: {}", backing.error().describe());
  } else if (auto base = place(bytes, *fd); !base) {
    unmapMemory(*backing, bytes);
    views = std::unexpected(base.error());
  } else {
    views = Views{*base, static_cast<std::byte*>(*backing)};
  }
  ::close(*fd);  // the mappings keep the file
  return views;
}

// ---- host access --------------------------------------------------------------------------------

std::map<CUdeviceptr, Range>::iterator rangeHolding(Managed& m, std::uintptr_t address) noexcept {
  auto it = m.ranges.upper_bound(address);
  if (it == m.ranges.begin()) return m.ranges.end();
  --it;
  return address - it->first < it->second.mapped ? it : m.ranges.end();
}

// Copies chunks [first, first + count) from the device into the backing view, after the device
// finished what it was given. Runs inside (t_inside), under the mutex.
CUresult fetch(CUdeviceptr base, Range& range, std::size_t first, std::size_t count) noexcept {
  WithContext current(range.context);
  DriverCall call;
  keepForLater(call.call(Method::cuCtxSynchronize, {}).error);
  const std::size_t most = call.session().maxPayloadBytes();
  if (most == 0) return CUDA_ERROR_DEVICE_UNAVAILABLE;
  const std::size_t end = std::min((first + count) * kChunk, range.mapped);
  for (std::size_t done = first * kChunk; done < end;) {
    const std::size_t n = std::min(most, end - done);
    auto outcome = call.call(Method::cuMemcpyDtoH_v2, pack(base + done, n));
    if (outcome.error != CUDA_SUCCESS) return outcome.error;
    if (outcome.payload.size() != n) return CUDA_ERROR_UNKNOWN;
    std::memcpy(range.backing + done, outcome.payload.data(), n);
    done += n;
  }
  return CUDA_SUCCESS;
}

// Makes chunks [first, first + count) host-resident (they are device-owned), the first one dirty
// when `write`. Under the mutex.
bool bringToHost(CUdeviceptr base, Range& range, std::size_t first, std::size_t count, bool write) noexcept {
  Inside inside;
  if (range.deviceMayHaveWritten) {
    if (CUresult error = fetch(base, range, first, count); error != CUDA_SUCCESS) {
      log().error("managed memory at {:#x}: fetching {} bytes from the device failed with CUresult {}",
                  base + first * kChunk, count * kChunk, static_cast<int>(error));
      return false;
    }
  }
  if (!protect(base, first, 1, write ? PROT_READ | PROT_WRITE : PROT_READ) || !protect(base, first + 1, count - 1, PROT_READ)) {
    return false;
  }
  for (std::size_t i = first; i < first + count; ++i) range.chunks[i] = Chunk::kClean;
  if (write) range.chunks[first] = Chunk::kDirty;
  range.hostChunks += count;
  DriverState::get().managedHandBackDue().store(true, std::memory_order_relaxed);
  return true;
}

[[noreturn]] void faultWhileHoldingSession(std::uintptr_t address) noexcept {
  log().critical("managed memory at {:#x} was touched as host memory by Flyt's own code while it was in a call to the "
                 "worker; the page cannot be fetched without deadlock. Aborting.", address);
  log().flush();
  std::abort();
}

// True when the fault was a managed page and the access may be retried.
bool serveFault(std::uintptr_t address, bool write) noexcept {
  if (t_inside) return false;  // this file touches backing views only: not a managed page
  auto& m = managed();
  std::unique_lock lock(m.mutex, std::defer_lock);
  if (DriverCall::heldByThisThread()) {
    // Without waiting: the thread holding the mutex may be waiting for our session.
    if (!lock.try_lock() || rangeHolding(m, address) != m.ranges.end()) faultWhileHoldingSession(address);
    return false;
  }
  lock.lock();
  auto it = rangeHolding(m, address);
  if (it == m.ranges.end()) return false;
  auto& [base, range] = *it;
  const std::size_t index = (address - base) / kChunk;
  switch (range.chunks[index]) {
    case Chunk::kDirty: return true;  // another thread opened it meanwhile
    case Chunk::kClean:
      if (!write) return true;
      if (!protect(base, index, 1, PROT_READ | PROT_WRITE)) return false;
      range.chunks[index] = Chunk::kDirty;
      return true;
    case Chunk::kDevice: break;
  }
  std::size_t count = 1;
  while (count < kReadAhead && index + count < range.chunks.size() && range.chunks[index + count] == Chunk::kDevice) ++count;
  return bringToHost(base, range, index, count, write);
}

bool faultIsWrite([[maybe_unused]] void* context) noexcept {
#if defined(__x86_64__)
  constexpr greg_t kWriteBit = 0x2;  // the page-fault error code's W/R bit
  return (static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_ERR] & kWriteBit) != 0;
#else
  return true;  // a read served as a write only costs a write-back
#endif
}

void chain(int signal, siginfo_t* info, void* context) noexcept {
  const struct sigaction& previous = managed().previous;
  if ((previous.sa_flags & SA_SIGINFO) != 0 && previous.sa_sigaction != nullptr) {
    previous.sa_sigaction(signal, info, context);
  } else if (previous.sa_handler == SIG_DFL || previous.sa_handler == SIG_IGN) {
    // The access faults again on return and the default action ends the process, as it would have.
    struct sigaction fallback {};
    fallback.sa_handler = SIG_DFL;
    ::sigemptyset(&fallback.sa_mask);
    ::sigaction(signal, &fallback, nullptr);
  } else {
    previous.sa_handler(signal);
  }
}

void onFault(int signal, siginfo_t* info, void* context) {
  const int savedErrno = errno;
  const bool served = serveFault(reinterpret_cast<std::uintptr_t>(info->si_addr), faultIsWrite(context));
  errno = savedErrno;
  if (!served) chain(signal, info, context);
}

CUresult installFaultHandler() noexcept {
  auto& m = managed();
  std::lock_guard lock(m.mutex);
  if (m.handlerInstalled) return CUDA_SUCCESS;
  struct sigaction action {};
  action.sa_sigaction = onFault;
  action.sa_flags = SA_SIGINFO | SA_RESTART;
  ::sigemptyset(&action.sa_mask);
  // The previous handler is read first, so that it is in place before any fault can reach ours.
  auto done = sys("sigaction", [&] { return ::sigaction(SIGSEGV, nullptr, &m.previous); });
  if (done) done = sys("sigaction", [&] { return ::sigaction(SIGSEGV, &action, nullptr); });
  if (!done) {
    log().error("cuMemAllocManaged: installing the page-fault handler failed: {}", done.error().describe());
    return CUDA_ERROR_OPERATING_SYSTEM;
  }
  m.handlerInstalled = true;
  return CUDA_SUCCESS;
}

// ---- back to the device -------------------------------------------------------------------------

// Every host-resident chunk of `range` becomes device-owned, dirty ones queued as copies from the
// backing view. Under the mutex, inside.
void giveBack(CUdeviceptr base, Range& range) noexcept {
  const std::size_t count = range.chunks.size();
  // First no host access (a concurrent access faults and waits for the mutex), then the copies.
  for (std::size_t i = 0; i < count;) {
    if (range.chunks[i] == Chunk::kDevice) {
      ++i;
      continue;
    }
    std::size_t end = i;
    while (end < count && range.chunks[end] != Chunk::kDevice) ++end;
    (void)protect(base, i, end - i, PROT_NONE);
    i = end;
  }
  WithContext current(range.context);
  DriverCall call;
  const std::size_t most = call.session().maxPayloadBytes();
  CUresult failed = most == 0 ? CUDA_ERROR_DEVICE_UNAVAILABLE : CUDA_SUCCESS;
  for (std::size_t i = 0; i < count && failed == CUDA_SUCCESS;) {
    if (range.chunks[i] != Chunk::kDirty) {
      ++i;
      continue;
    }
    std::size_t end = i;
    while (end < count && range.chunks[end] == Chunk::kDirty) ++end;
    for (std::size_t done = i * kChunk; done < end * kChunk && failed == CUDA_SUCCESS;) {
      const std::size_t n = std::min(most, end * kChunk - done);
      failed = call.enqueue(Method::cuMemcpyHtoD_v2, pack(base + done, n), std::span(range.backing + done, n));
      done += n;
    }
    i = end;
  }
  if (failed != CUDA_SUCCESS) {
    log().error("managed memory at {:#x}: writing host changes back to the device failed with CUresult {}", base,
                static_cast<int>(failed));
    keepForLater(failed);
  }
  std::fill(range.chunks.begin(), range.chunks.end(), Chunk::kDevice);
  range.hostChunks = 0;
}

}  // namespace

void handBackManagedMemory() noexcept {
  if (t_inside) return;
  Inside inside;
  auto& m = managed();
  std::lock_guard lock(m.mutex);
  auto& due = DriverState::get().managedHandBackDue();
  if (!due.load(std::memory_order_relaxed)) return;
  for (auto& [base, range] : m.ranges) {
    range.deviceMayHaveWritten = true;  // the call about to go may write any of it
    if (range.hostChunks != 0) giveBack(base, range);
  }
  due.store(false, std::memory_order_relaxed);
}

CUresult fetchManagedToHost(CUdeviceptr address, std::size_t bytes) noexcept {
  if (t_inside || bytes == 0) return CUDA_SUCCESS;
  auto& m = managed();
  std::lock_guard lock(m.mutex);
  auto it = rangeHolding(m, address);
  if (it == m.ranges.end()) return CUDA_ERROR_INVALID_VALUE;
  auto& [base, range] = *it;
  const std::size_t first = (address - base) / kChunk;
  const std::size_t last = std::min<std::size_t>((address - base + bytes - 1) / kChunk + 1, range.chunks.size());
  for (std::size_t i = first; i < last;) {
    if (range.chunks[i] != Chunk::kDevice) {
      ++i;
      continue;
    }
    std::size_t end = i;
    while (end < last && range.chunks[end] == Chunk::kDevice) ++end;
    if (!bringToHost(base, range, i, end - i, false)) return CUDA_ERROR_UNKNOWN;
    i = end;
  }
  return CUDA_SUCCESS;
}

namespace {

CUresult allocateManaged(CUdeviceptr* dptr, std::size_t bytes, unsigned flags) noexcept {
  if (dptr == nullptr || bytes == 0 || (flags != CU_MEM_ATTACH_GLOBAL && flags != CU_MEM_ATTACH_HOST)) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  const CUcontext context = DriverState::get().current();
  const auto info = DriverState::get().context(context);
  if (context == nullptr || !info) return CUDA_ERROR_INVALID_CONTEXT;
  if (bytes > SIZE_MAX - kGranularity) return CUDA_ERROR_OUT_OF_MEMORY;
  const std::size_t mapped = roundUp(bytes, kGranularity);
  if (CUresult installed = installFaultHandler(); installed != CUDA_SUCCESS) return installed;
  Inside inside;
  auto views = mapViews(mapped);
  if (!views) return views.error();
  CUmemGenericAllocationHandle handle = 0;
  if (CUresult error = backOnWorker(views->base, mapped, info->device, &handle); error != CUDA_SUCCESS) {
    unmapMemory(appView(views->base), mapped);
    unmapMemory(views->backing, mapped);
    freeOnWorker(views->base, mapped);
    return error;
  }
  Range range;
  range.bytes = bytes;
  range.mapped = mapped;
  range.backing = views->backing;
  range.handle = handle;
  range.context = context;
  range.chunks.assign(mapped / kChunk, Chunk::kDevice);
  {
    auto& m = managed();
    std::lock_guard lock(m.mutex);
    m.ranges.emplace(views->base, std::move(range));
    DriverState::get().allocated(views->base, bytes, true);
    // The next call marks the range as possibly written by the device.
    DriverState::get().managedHandBackDue().store(true, std::memory_order_relaxed);
  }
  *dptr = views->base;
  return CUDA_SUCCESS;
}

// cuMemFree of a managed base: the host views go first (a later access is a use after free and
// faults as one), then the worker's mapping, physical memory and reservation, after the device
// finished with it.
CUresult freeManaged(CUdeviceptr base) noexcept {
  Range range;
  {
    auto& m = managed();
    std::lock_guard lock(m.mutex);
    auto it = m.ranges.find(base);
    if (it == m.ranges.end()) return CUDA_ERROR_INVALID_VALUE;
    range = std::move(it->second);
    m.ranges.erase(it);
  }
  DriverState::get().released(base);
  forgetManagedAdvice(base);
  unmapMemory(appView(base), range.mapped);
  unmapMemory(range.backing, range.mapped);
  Inside inside;
  WithContext current(range.context);
  DriverCall call;
  keepForLater(call.call(Method::cuCtxSynchronize, {}).error);
  CUresult error = call.call(Method::cuMemUnmap, pack(base, range.mapped)).error;
  if (error == CUDA_SUCCESS) error = call.call(Method::cuMemRelease, pack(range.handle)).error;
  if (error == CUDA_SUCCESS) error = call.call(Method::cuMemAddressFree, pack(base, range.mapped)).error;
  if (error != CUDA_SUCCESS) {
    log().warn("cuMemFree: releasing managed memory {:#x} on the worker failed with CUresult {}", base,
               static_cast<int>(error));
  }
  return error;
}

}  // namespace
}  // namespace flyt::interpose::cu

using namespace flyt::interpose::cu;

FLYT_CU_EXPORT CUresult cuMemAllocManaged(CUdeviceptr* dptr, size_t bytesize, unsigned int flags) {
  return allocateManaged(dptr, bytesize, flags);
}

// The generated stub's checks and bookkeeping for every other pointer (a "client" handler).
FLYT_CU_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr) {
  if (!freeable(dptr)) return CUDA_ERROR_INVALID_VALUE;
  if (dptr != 0 && DriverState::get().isManaged(dptr)) return freeManaged(dptr);
  const CUresult result = forward<Method::cuMemFree_v2>(dptr);
  if (result == CUDA_SUCCESS) released(dptr);
  return result;
}

// Either output may be null, as in the driver.
FLYT_CU_EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr* pbase, size_t* psize, CUdeviceptr dptr) {
  if (DriverState::get().isManaged(dptr)) {
    const auto range = DriverState::get().allocation(dptr);
    if (!range) return CUDA_ERROR_NOT_FOUND;  // freed meanwhile
    if (pbase != nullptr) *pbase = range->first;
    if (psize != nullptr) *psize = range->second;
    return CUDA_SUCCESS;
  }
  return forward<Method::cuMemGetAddressRange_v2>(pbase, psize, dptr);
}
