#include "serve_context.hpp"

#include "flyt/transport/log.hpp"

namespace flyt::backend::cu {
namespace {

spdlog::logger& log() { return flyt::logger("worker"); }

const void* pointer(CUdeviceptr address) { return reinterpret_cast<const void*>(static_cast<std::uintptr_t>(address)); }

}  // namespace

std::uint64_t HandleTable::add(HandleKind kind, std::uint64_t real) {
  const std::uint64_t id = m_next;
  m_next += 0x10;
  m_byId[id] = Entry{kind, real};
  m_byReal[{kind, real}] = id;
  return id;
}

void HandleTable::forget(std::uint64_t id) {
  auto it = m_byId.find(id);
  if (it == m_byId.end()) return;
  m_byReal.erase({it->second.kind, it->second.real});
  m_byId.erase(it);
  if (m_onForget) m_onForget(id);
  std::vector<std::uint64_t> children;
  for (auto owned = m_owned.lower_bound({id, 0}); owned != m_owned.end() && owned->first == id;) {
    children.push_back(owned->second);
    owned = m_owned.erase(owned);
  }
  for (std::uint64_t child : children) forget(child);
}

std::uint64_t HandleTable::realOf(std::uint64_t id, HandleKind kind) const {
  auto it = m_byId.find(id);
  return it == m_byId.end() || it->second.kind != kind ? 0 : it->second.real;
}

std::optional<Outcome> HandleTable::refuse(const char* function, const char* argument, std::uint64_t id,
                                           HandleKind kind) const {
  Outcome out;
  out.status = wire::TransportStatus::MALFORMED;
  out.error = CUDA_ERROR_INVALID_HANDLE;
  out.detail = fmt::format("{}: {} {:#x} is not a {} of this session", function, argument, id, api::cu::name(kind));
  log().warn("session {:016x}: refused {}", m_sessionId, out.detail);
  return out;
}

void ServeContext::allocated(CUdeviceptr base, std::uint64_t bytes) {
  m_allocations.add(pointer(base), bytes);
  CUcontext current{};
  if (m_driver.cuCtxGetCurrent == nullptr || m_driver.cuCtxGetCurrent(&current) != CUDA_SUCCESS) current = nullptr;
  m_allocationContexts[base] = current;
}

void ServeContext::contextGone(CUcontext context) {
  if (context == nullptr) return;
  for (auto it = m_allocationContexts.begin(); it != m_allocationContexts.end();) {
    if (it->second != context) {
      ++it;
      continue;
    }
    m_quota->release(m_allocations.take(pointer(it->first)));
    it = m_allocationContexts.erase(it);
  }
}

void ServeContext::forgetGlobalsOf(std::uint64_t owner) {
  for (auto it = m_globalOwners.lower_bound({owner, 0}); it != m_globalOwners.end() && it->first == owner;) {
    m_globals.remove(pointer(it->second));
    it = m_globalOwners.erase(it);
  }
}

Outcome ServeContext::malformed(std::string detail) const {
  Outcome out;
  out.status = wire::TransportStatus::MALFORMED;
  out.error = CUDA_ERROR_INVALID_VALUE;
  out.detail = std::move(detail);
  log().warn("session {:016x}: refused {}", m_sessionId, out.detail);
  return out;
}

Outcome ServeContext::unsupported(const char* function) const {
  Outcome out;
  out.status = wire::TransportStatus::UNSUPPORTED;
  out.error = CUDA_ERROR_NOT_SUPPORTED;
  out.detail = fmt::format("{} is not available on this worker's driver", function);
  return out;
}

std::optional<Outcome> ServeContext::deviceOrdinal(const char* function, const char* argument,
                                                   const CUdevice* device) const {
  if (*device >= 0 && *device < m_deviceCount) return std::nullopt;
  Outcome out;
  out.error = CUDA_ERROR_INVALID_DEVICE;
  out.detail = fmt::format("{}: {} {} is not one of the session's {} devices", function, argument, *device, m_deviceCount);
  return out;
}

std::optional<Outcome> ServeContext::deviceRange(const char* function, const char* argument, CUdeviceptr address,
                                                 std::uint64_t bytes) const {
  if (m_allocations.contains(pointer(address), bytes) || m_globals.contains(pointer(address), bytes) ||
      m_mappings.containsContiguous(pointer(address), bytes) || m_mappedHost.contains(pointer(address), bytes)) {
    return std::nullopt;
  }
  return malformed(fmt::format("{}: {} [{:#x}, +{}) lies outside this session's allocations", function, argument,
                               address, bytes));
}

std::optional<Outcome> ServeContext::isAllocation(const char* function, const char* argument, CUdeviceptr address) const {
  if (address == 0 || m_allocations.isBase(pointer(address))) return std::nullopt;  // freeing null is allowed
  return malformed(fmt::format("{}: {} {:#x} is not an allocation of this session", function, argument, address));
}

std::optional<Outcome> ServeContext::reserve(const char* function, std::uint64_t bytes) {
  if (m_quota->tryCharge(bytes)) return std::nullopt;
  Outcome out;
  out.error = CUDA_ERROR_OUT_OF_MEMORY;
  out.detail = fmt::format("{}: {} bytes exceed the session's memory quota ({} of {} bytes in use)", function, bytes,
                           m_quota->used(), m_quota->limit());
  log().info("session {:016x}: {}", m_sessionId, out.detail);
  return out;
}

}  // namespace flyt::backend::cu
