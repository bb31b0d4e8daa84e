// What every handler of a driver session works with (the generated ones of cu_serve.inc and the
// hand-written ones of serve_*.cpp): the session's driver, its handle table, its allocations and
// quota, and the checks the roles of api/cuda.toml call for. A refused check is an Outcome with
// status MALFORMED (logged), never a call into the driver.
#pragma once

#include <cuda.h>
#include <fmt/format.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "../allocation_table.hpp"
#include "../green_context.hpp"
#include "../pinned_buffer.hpp"
#include "flyt/api/codec.hpp"
#include "flyt/api/cu_driver_table.hpp"
#include "flyt/api/cu_methods.hpp"
#include "flyt/backend/memory_quota.hpp"
#include "flyt/wire/session.capnp.h"

namespace flyt::backend::cu {

using api::cu::HandleKind;

struct Outcome {
  std::uint64_t sequence = 0;
  CUresult error = CUDA_SUCCESS;
  wire::TransportStatus status = wire::TransportStatus::OK;
  std::string detail;
  std::vector<std::byte> results;
  std::vector<std::byte> payload;  // returned inline after the reply (device-to-host data)
  std::span<const std::byte> payloadView;  // instead of `payload`: bytes in a worker buffer

  [[nodiscard]] std::span<const std::byte> payloadBytes() const {
    return payloadView.empty() ? std::span<const std::byte>(payload) : payloadView;
  }
  [[nodiscard]] bool failed() const { return error != CUDA_SUCCESS || status != wire::TransportStatus::OK; }
};

// The session's driver objects by the ids the application sees. An id names one object of one
// kind; the application cannot name another session's object, an object of another kind, or one it
// destroyed. Null passes as null (the driver answers it), and so do the special streams
// CU_STREAM_LEGACY and CU_STREAM_PER_THREAD.
class HandleTable {
 public:
  explicit HandleTable(std::uint64_t sessionId) : m_sessionId(sessionId) {}

  // A new object: a fresh id.
  template <class H>
  H create(HandleKind kind, H real) {
    if (raw(real) == 0) return H{};
    return fromRaw<H>(add(kind, raw(real)));
  }
  // An object the driver may have handed out before (a stream's context): its id, or a fresh one.
  template <class H>
  H lookup(HandleKind kind, H real) {
    if (raw(real) == 0) return H{};
    if (auto it = m_byReal.find({kind, raw(real)}); it != m_byReal.end()) return fromRaw<H>(it->second);
    return create(kind, real);
  }
  // The object `id` names, when it is one of `kinds`; else a refusal.
  template <class H>
  std::optional<Outcome> use(const char* function, const char* argument, H id, std::initializer_list<HandleKind> kinds,
                             H* real) {
    const std::uint64_t wire = raw(id);
    const bool isStream = std::find(kinds.begin(), kinds.end(), HandleKind::stream) != kinds.end();
    if (wire == 0 || (isStream && (wire == raw(CU_STREAM_LEGACY) || wire == raw(CU_STREAM_PER_THREAD)))) {
      *real = id;
      return std::nullopt;
    }
    auto it = m_byId.find(wire);
    if (it == m_byId.end() || std::find(kinds.begin(), kinds.end(), it->second.kind) == kinds.end()) {
      return refuse(function, argument, wire, *kinds.begin());
    }
    *real = fromRaw<H>(it->second.real);
    return std::nullopt;
  }
  // Forgets `id` and, with it, every object it owns (own()), recursively.
  template <class H>
  void destroy(H id) {
    forget(raw(id));
  }
  // `child` goes when `owner` is destroyed: the driver frees a module's functions with the module,
  // a library's kernels (and their functions) with the library.
  template <class C, class O>
  void own(C child, O owner) {
    if (raw(child) != 0 && raw(owner) != 0) m_owned.emplace(raw(owner), raw(child));
  }
  // `forgotten` is called with every id destroy() forgets, the owned ones included (ServeContext
  // drops what it keeps about the id: a module's globals, a function's parameter size).
  void setOnForget(std::function<void(std::uint64_t)> forgotten) { m_onForget = std::move(forgotten); }
  // The object `id` names if it is of `kind` (0 when not).
  [[nodiscard]] std::uint64_t realOf(std::uint64_t id, HandleKind kind) const;

 private:
  struct Entry {
    HandleKind kind;
    std::uint64_t real;
  };
  template <class H>
  static std::uint64_t raw(H handle) {
    if constexpr (std::is_pointer_v<H>) {
      return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(handle));
    } else {
      return static_cast<std::uint64_t>(handle);
    }
  }
  template <class H>
  static H fromRaw(std::uint64_t value) {
    if constexpr (std::is_pointer_v<H>) {
      return reinterpret_cast<H>(static_cast<std::uintptr_t>(value));
    } else {
      return static_cast<H>(value);
    }
  }
  std::uint64_t add(HandleKind kind, std::uint64_t real);
  void forget(std::uint64_t id);
  std::optional<Outcome> refuse(const char* function, const char* argument, std::uint64_t id, HandleKind kind) const;

  std::uint64_t m_sessionId;
  // Ids look like aligned addresses and are never 0, 1 or 2 (null and the special streams).
  std::uint64_t m_next = 0x10000;
  std::map<std::uint64_t, Entry> m_byId;
  std::map<std::pair<HandleKind, std::uint64_t>, std::uint64_t> m_byReal;
  std::set<std::pair<std::uint64_t, std::uint64_t>> m_owned;  // {owner, child}
  std::function<void(std::uint64_t)> m_onForget;
};

// A session's SM share as the driver cut applies it (driver_session.cpp).
struct SmShare {
  std::optional<GreenContext> green;
  std::uint32_t grantedSms = 0;
};

// The green-context entry points of the session's driver (NVIDIA's, or the stand-in's, which has
// none: complete() is false there).
inline GreenContextApi greenContextApi(const api::cu::DriverTable& d) {
  GreenContextApi api;
  api.deviceGet = d.cuDeviceGet;
  api.getResource = d.cuDeviceGetDevResource;
  api.split = d.cuDevSmResourceSplitByCount;
  api.generateDesc = d.cuDevResourceGenerateDesc;
  api.create = d.cuGreenCtxCreate;
  api.toContext = d.cuCtxFromGreenCtx;
  api.setCurrent = d.cuCtxSetCurrent;
  api.destroy = d.cuGreenCtxDestroy;
  return api;
}

class ServeContext {
 public:
  ServeContext(const api::cu::DriverTable& driver, std::uint64_t sessionId, std::shared_ptr<MemoryQuota> quota,
               int deviceCount)
      : m_driver(driver), m_sessionId(sessionId), m_handles(sessionId), m_quota(std::move(quota)),
        m_deviceCount(deviceCount) {
    m_handles.setOnForget([this](std::uint64_t id) {
      forgetGlobalsOf(id);
      paramBytes.erase(id);
    });
  }
  ServeContext(const ServeContext&) = delete;
  ServeContext& operator=(const ServeContext&) = delete;

  [[nodiscard]] const api::cu::DriverTable& driver() const { return m_driver; }
  [[nodiscard]] HandleTable& handles() { return m_handles; }
  [[nodiscard]] std::uint64_t sessionId() const { return m_sessionId; }
  [[nodiscard]] MemoryQuota& quota() { return *m_quota; }
  [[nodiscard]] int deviceCount() const { return m_deviceCount; }

  [[nodiscard]] Outcome malformed(std::string detail) const;
  [[nodiscard]] Outcome unsupported(const char* function) const;

  // ---- checks of argument roles ----
  std::optional<Outcome> deviceOrdinal(const char* function, const char* argument, const CUdevice* device) const;
  // [address, address + bytes) lies inside one allocation, module global, mapping or mapped pinned
  // host range.
  std::optional<Outcome> deviceRange(const char* function, const char* argument, CUdeviceptr address,
                                     std::uint64_t bytes) const;
  std::optional<Outcome> isAllocation(const char* function, const char* argument, CUdeviceptr address) const;
  // Charges `bytes` to the quota; a refusal (CUDA_ERROR_OUT_OF_MEMORY) when they do not fit.
  std::optional<Outcome> reserve(const char* function, std::uint64_t bytes);
  void unreserve(std::uint64_t bytes) { m_quota->release(bytes); }
  // A new allocation, made in the current context (which frees it when it goes: contextGone()).
  void allocated(CUdeviceptr base, std::uint64_t bytes);
  // Forgets the allocation and gives its bytes back to the quota.
  void released(CUdeviceptr base) {
    m_allocationContexts.erase(base);
    m_quota->release(m_allocations.take(reinterpret_cast<const void*>(static_cast<std::uintptr_t>(base))));
  }
  // The driver freed what `context` held (destroyed, reset, or its last retain released): its
  // allocations are forgotten and their bytes given back to the quota.
  void contextGone(CUcontext context);
  // A global variable of the module or library `owner` (an id): the session may name it until the
  // owner is unloaded (not charged: it is the module's image).
  void addGlobal(CUdeviceptr base, std::uint64_t bytes, std::uint64_t owner) {
    m_globals.add(reinterpret_cast<const void*>(static_cast<std::uintptr_t>(base)), bytes);
    m_globalOwners.emplace(owner, base);
  }
  // A range of a reservation mapped to physical memory (cuMemMap): the session may name it (the
  // physical memory is what is charged). Returns false when it overlaps a mapping.
  bool addMapping(CUdeviceptr base, std::uint64_t bytes) {
    const auto* p = reinterpret_cast<const void*>(static_cast<std::uintptr_t>(base));
    if (m_mappings.overlaps(p, bytes)) return false;
    m_mappings.add(p, bytes);
    return true;
  }
  // The size of the mapping starting at `base`, which is forgotten; 0 when there is none.
  std::uint64_t removeMapping(CUdeviceptr base) {
    return m_mappings.take(reinterpret_cast<const void*>(static_cast<std::uintptr_t>(base)));
  }
  [[nodiscard]] std::uint64_t mappingSize(CUdeviceptr base) const {
    return m_mappings.sizeAt(reinterpret_cast<const void*>(static_cast<std::uintptr_t>(base)));
  }
  // Pinned host memory of the data region that the session asked a device address of
  // (cuMemHostGetDevicePointer): copies and memsets may name it as device memory. Not charged, not
  // freeable; forgotten when the segment is unmapped.
  void addMappedHost(CUdeviceptr base, std::uint64_t bytes) {
    m_mappedHost.add(reinterpret_cast<const void*>(static_cast<std::uintptr_t>(base)), bytes);
  }
  void removeMappedHost(CUdeviceptr base) {
    (void)m_mappedHost.remove(reinterpret_cast<const void*>(static_cast<std::uintptr_t>(base)));
  }
  [[nodiscard]] bool anyMappingIn(CUdeviceptr base, std::uint64_t bytes) const {
    return m_mappings.overlaps(reinterpret_cast<const void*>(static_cast<std::uintptr_t>(base)), bytes);
  }

  // ---- state of the hand-written handlers ----
  // Images being uploaded or uploaded (flytUploadImage), by hash: the bytes received so far, in
  // order, of an image of `total` bytes.
  struct Image {
    std::vector<std::byte> bytes;
    std::uint64_t total = 0;
  };
  std::map<std::uint64_t, Image> images;
  // The parameter bytes of functions and kernels whose layout the driver gave, by id.
  std::map<std::uint64_t, std::uint32_t> paramBytes;
  // The primary contexts the session holds one real retain of, by device.
  std::map<CUdevice, CUcontext> retainedPrimaries;
  // An SM share without MPS: device 0's "primary context" is this green context of the granted SMs
  // (made when the session starts, kept for its life), and cuCtxCreate on device 0 makes more green
  // contexts of the same partition (greenCreated, by the context the application got).
  std::optional<GreenContext> green;
  std::map<CUcontext, CUgreenCtx> greenCreated;
  // The SMs of device 0 the share grants (0: no share, or MPS, whose driver reports them itself).
  std::uint32_t grantedSms = 0;
  // The session runs on NVIDIA's driver: the GPU's own readings (gpu_monitor.hpp) may be served.
  bool readsGpu = false;
  // Virtual memory (serve_virtual_memory.cpp): reservations (base -> size), physical allocations
  // by handle id, and which handle each mapping's base maps.
  AllocationTable reservations;
  struct Physical {
    CUmemGenericAllocationHandle real = 0;
    std::uint64_t bytes = 0;
    unsigned mappings = 0;
  };
  std::map<std::uint64_t, Physical> physical;
  std::map<CUdeviceptr, std::uint64_t> mappingHandle;
  // Texture and surface objects the session made (their values are the driver's: serve_textures.cpp).
  std::set<std::uint64_t> textureObjects, surfaceObjects;
  // The most bytes one reply may carry inline (the channel's limit).
  std::size_t maxReplyPayload = 0;
  // Where device-to-host bytes returned inline are copied to (page-locked, reused by every reply:
  // one message is handled at a time); null: a vector of the Outcome's.
  PinnedBuffer* replyStaging = nullptr;
  // Shared-memory sessions: inline host-to-device bytes of kBounceMinBytes or more are copied here
  // (page-locked) first, so that the driver copies them in one DMA rather than through its own
  // pageable path, which costs more above about 16 KiB on an H100 (serve_memory.cpp). Null over TCP,
  // whose payloads are received into page-locked memory already.
  PinnedBuffer* copyBounce = nullptr;

 private:
  void forgetGlobalsOf(std::uint64_t owner);

  const api::cu::DriverTable& m_driver;
  std::uint64_t m_sessionId;
  HandleTable m_handles;
  std::shared_ptr<MemoryQuota> m_quota;
  int m_deviceCount;
  AllocationTable m_allocations;
  std::map<CUdeviceptr, CUcontext> m_allocationContexts;  // the context each allocation was made in
  AllocationTable m_globals;
  std::set<std::pair<std::uint64_t, CUdeviceptr>> m_globalOwners;  // {module or library id, base}
  AllocationTable m_mappings;
  AllocationTable m_mappedHost;
};

}  // namespace flyt::backend::cu
