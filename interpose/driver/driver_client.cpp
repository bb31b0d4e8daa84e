#include "driver_client.hpp"
#include "driver_internal.hpp"
#include "forward.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "flyt/transport/log.hpp"
#include "session_client_impl.hpp"

namespace flyt::interpose {

template class SessionClient<cu::CuTraits>;

namespace cu {
namespace {

spdlog::logger& log() { return flyt::logger("interpose"); }

// Each thread's stack of current contexts; the top is the current one.
thread_local std::vector<CUcontext> t_contexts;

}  // namespace

CUresult CuTraits::fromStatus(wire::TransportStatus status, std::int32_t verbatim) noexcept {
  switch (status) {
    case wire::TransportStatus::OK: return static_cast<CUresult>(verbatim);
    case wire::TransportStatus::UNSUPPORTED: return CUDA_ERROR_NOT_SUPPORTED;
    case wire::TransportStatus::MALFORMED: return CUDA_ERROR_INVALID_VALUE;
    case wire::TransportStatus::DISCONNECTED:
    case wire::TransportStatus::TIMEOUT:
    case wire::TransportStatus::BUSY: return CUDA_ERROR_DEVICE_UNAVAILABLE;
  }
  return CUDA_ERROR_UNKNOWN;
}

void CuTraits::noteEarlierFailure(CUresult error) noexcept {
  log().debug("an earlier batched call failed with CUresult {}", static_cast<int>(error));
}

// ---- DriverState --------------------------------------------------------------------------------

DriverState& DriverState::get() noexcept {
  static auto* const state = new DriverState();  // leaked: calls may come during exit
  return *state;
}

CUresult DriverState::init() noexcept {
  {
    std::lock_guard lock(m_mutex);
    if (m_initTried) return m_initResult;
  }
  std::vector<std::byte> bytes;
  CUresult result = CUDA_ERROR_DEVICE_UNAVAILABLE;
  {
    auto session = CuClient::get().session();
    if (session.usable()) {
      auto outcome = session.call(Method::flytGetDevices, {});
      result = outcome.error;
      bytes = std::move(outcome.results);
    }
  }
  std::lock_guard lock(m_mutex);
  if (m_initTried) return m_initResult;
  m_initTried = true;
  if (result == CUDA_SUCCESS) {
    api::cu::DeviceSnapshot head;
    if (bytes.size() < sizeof head) {
      result = CUDA_ERROR_UNKNOWN;
    } else {
      std::memcpy(&head, bytes.data(), sizeof head);
      if (head.deviceCount > api::cu::kMaxDevices ||
          bytes.size() != sizeof head + head.deviceCount * sizeof(api::cu::DeviceInfo)) {
        result = CUDA_ERROR_UNKNOWN;
      }
    }
    if (result != CUDA_SUCCESS) log().error("the worker's device snapshot is malformed ({} bytes)", bytes.size());
  }
  if (result == CUDA_SUCCESS) {
    m_snapshotBytes = std::move(bytes);
    m_snapshot = reinterpret_cast<const api::cu::DeviceSnapshot*>(m_snapshotBytes.data());
    if (const char* wanted = std::getenv("FLYT_CALL_COUNTS"); wanted != nullptr && *wanted != '\0' && *wanted != '0') {
      std::atexit(reportCallCounts);
    }
  }
  m_initResult = result;
  return result;
}

// FLYT_CALL_COUNTS=1: at exit, what the session forwarded and which calls were waited for, to
// stderr (how a program's synchronous calls are found; flytbench torch counts them per step).
void reportCallCounts() noexcept {
  try {
    auto& client = CuClient::get();
    const CallCounts counts = client.counts();
    std::string line = fmt::format("flyt: {} calls forwarded in {} messages, {} waited for", counts.calls,
                                   counts.messages, counts.waited);
    std::vector<std::pair<std::uint64_t, std::uint32_t>> byCount;
    for (const auto& [method, count] : client.waitedByMethod()) byCount.emplace_back(count, method);
    std::sort(byCount.rbegin(), byCount.rend());
    const char* separator = ": ";
    for (const auto& [count, method] : byCount) {
      const auto* info = api::cu::methodInfo(method);
      line += fmt::format("{}{} {}", separator, info != nullptr ? info->name : "?", count);
      separator = ", ";
    }
    std::fprintf(stderr, "%s\n", line.c_str());
  } catch (...) {
    // Nothing to report with.
  }
}

const api::cu::DeviceSnapshot* DriverState::devices() const noexcept {
  std::lock_guard lock(m_mutex);
  return m_snapshot;
}

const api::cu::DeviceInfo* DriverState::device(CUdevice ordinal) const noexcept {
  const auto* snapshot = devices();
  if (snapshot == nullptr || ordinal < 0 || static_cast<std::uint32_t>(ordinal) >= snapshot->deviceCount) {
    return nullptr;
  }
  // The records follow the header; the bytes were allocated by std::vector, aligned for both.
  return reinterpret_cast<const api::cu::DeviceInfo*>(m_snapshotBytes.data() + sizeof(api::cu::DeviceSnapshot)) +
         ordinal;
}

CUcontext DriverState::current() const noexcept { return t_contexts.empty() ? nullptr : t_contexts.back(); }

void DriverState::setCurrent(CUcontext context) noexcept {
  if (t_contexts.empty()) {
    if (context != nullptr) t_contexts.push_back(context);
  } else if (context == nullptr && t_contexts.size() == 1) {
    t_contexts.clear();
  } else {
    t_contexts.back() = context;
  }
}

void DriverState::push(CUcontext context) noexcept { t_contexts.push_back(context); }

CUcontext DriverState::pop() noexcept {
  if (t_contexts.empty()) return nullptr;
  CUcontext top = t_contexts.back();
  t_contexts.pop_back();
  return top;
}

std::optional<ContextInfo> DriverState::context(CUcontext context) const noexcept {
  std::lock_guard lock(m_mutex);
  auto it = m_contexts.find(context);
  if (it == m_contexts.end()) return std::nullopt;
  return it->second;
}

void DriverState::addContext(CUcontext context, ContextInfo info) noexcept {
  std::lock_guard lock(m_mutex);
  m_contexts[context] = info;
}

void DriverState::removeContext(CUcontext context) noexcept {
  {
    std::lock_guard lock(m_mutex);
    m_contexts.erase(context);
  }
  // Other threads' stacks keep a destroyed context, as in the driver (their calls then fail with
  // CUDA_ERROR_INVALID_CONTEXT on the worker); the calling thread's loses it.
  std::erase(t_contexts, context);
}

CUcontext DriverState::primary(CUdevice device) const noexcept {
  std::lock_guard lock(m_mutex);
  auto it = m_primaries.find(device);
  return it == m_primaries.end() ? nullptr : it->second.first;
}

void DriverState::setPrimary(CUdevice device, CUcontext context) noexcept {
  std::lock_guard lock(m_mutex);
  m_primaries[device].first = context;
  m_contexts[context] = ContextInfo{device, true};
}

int DriverState::retainPrimary(CUdevice device) noexcept {
  std::lock_guard lock(m_mutex);
  return ++m_primaries[device].second;
}

int DriverState::releasePrimary(CUdevice device) noexcept {
  std::lock_guard lock(m_mutex);
  auto& count = m_primaries[device].second;
  if (count > 0) --count;
  return count;
}

void DriverState::storagePut(CUcontext context, void* key, void* value, StorageDestructor destructor) noexcept {
  std::lock_guard lock(m_mutex);
  m_storage[{context, key}] = Stored{value, destructor};
}

bool DriverState::storageDelete(CUcontext context, void* key) noexcept {
  std::lock_guard lock(m_mutex);
  return m_storage.erase({context, key}) == 1;
}

std::optional<void*> DriverState::storageGet(CUcontext context, void* key) const noexcept {
  std::lock_guard lock(m_mutex);
  auto it = m_storage.find({context, key});
  if (it == m_storage.end()) return std::nullopt;
  return it->second.value;
}

void DriverState::storageDestroy(CUcontext context) noexcept {
  std::vector<std::pair<void*, Stored>> doomed;
  {
    std::lock_guard lock(m_mutex);
    for (auto it = m_storage.lower_bound({context, nullptr}); it != m_storage.end() && it->first.first == context;) {
      doomed.emplace_back(it->first.second, it->second);
      it = m_storage.erase(it);
    }
  }
  for (auto& [key, stored] : doomed) {
    if (stored.destructor != nullptr) stored.destructor(context, key, stored.value);
  }
}

void DriverState::setLayout(std::uint64_t handle, ParamLayout layout) noexcept {
  std::lock_guard lock(m_mutex);
  m_layouts[handle] = std::move(layout);
}

std::optional<ParamLayout> DriverState::layout(std::uint64_t handle) const noexcept {
  std::lock_guard lock(m_mutex);
  auto it = m_layouts.find(handle);
  if (it == m_layouts.end()) return std::nullopt;
  return it->second;
}

void DriverState::setName(std::uint64_t handle, std::string name) noexcept {
  std::lock_guard lock(m_mutex);
  m_names.try_emplace(handle, std::move(name));  // a name handed out stays where it is
}

const char* DriverState::name(std::uint64_t handle) const noexcept {
  std::lock_guard lock(m_mutex);
  auto it = m_names.find(handle);
  return it == m_names.end() ? nullptr : it->second.c_str();
}

void DriverState::allocated(CUdeviceptr base, std::size_t bytes, bool managed) noexcept {
  if (base == 0 || bytes == 0) return;
  std::lock_guard lock(m_mutex);
  m_allocations[base] = bytes;
  if (managed) {
    m_managedBases.insert(base);
  } else {
    m_managedBases.erase(base);
  }
}

namespace {

bool isLegacy(CUstream stream) noexcept { return stream == nullptr || stream == CU_STREAM_LEGACY; }

std::pair<std::uintptr_t, std::uint64_t> streamKey(CUstream stream) noexcept {
  const auto raw = reinterpret_cast<std::uintptr_t>(stream);
  return {raw, stream == CU_STREAM_PER_THREAD ? static_cast<std::uint64_t>(::pthread_self()) : 0};
}

}  // namespace

void DriverState::streamBusy(CUstream stream) noexcept {
  std::lock_guard lock(m_mutex);
  ++m_anyStream.generation;
  if (!isLegacy(stream)) ++m_streams[streamKey(stream)].generation;
}

std::uint64_t DriverState::streamGeneration(CUstream stream) const noexcept {
  std::lock_guard lock(m_mutex);
  if (isLegacy(stream)) return m_anyStream.generation;
  auto it = m_streams.find(streamKey(stream));
  return it == m_streams.end() ? 1 : it->second.generation;
}

bool DriverState::streamIdle(CUstream stream, std::uint64_t generation) const noexcept {
  std::lock_guard lock(m_mutex);
  if (isLegacy(stream)) return m_anyStream.idleAt == generation;
  auto it = m_streams.find(streamKey(stream));
  return it != m_streams.end() && it->second.idleAt == generation;
}

void DriverState::streamIdled(CUstream stream, std::uint64_t generation) noexcept {
  std::lock_guard lock(m_mutex);
  if (isLegacy(stream)) {
    m_anyStream.idleAt = generation;
  } else {
    m_streams[streamKey(stream)].idleAt = generation;
  }
}

void DriverState::released(CUdeviceptr base) noexcept {
  std::lock_guard lock(m_mutex);
  m_allocations.erase(base);
  m_managedBases.erase(base);
  m_inaccessible.erase(base);
}

void DriverState::mapped(CUdeviceptr base, std::size_t bytes) noexcept {
  allocated(base, bytes);
  std::lock_guard lock(m_mutex);
  if (base != 0 && bytes != 0) m_inaccessible.insert(base);
}

void DriverState::accessSet(CUdeviceptr base, std::size_t bytes, bool readWrite) noexcept {
  std::lock_guard lock(m_mutex);
  // The mappings lying wholly in the range (cuMemSetAccess covers whole mappings).
  for (auto it = m_allocations.lower_bound(base); it != m_allocations.end() && it->first - base < bytes; ++it) {
    if (it->second > bytes - (it->first - base)) break;
    if (readWrite) {
      m_inaccessible.erase(it->first);
    } else if (!m_managedBases.contains(it->first)) {
      m_inaccessible.insert(it->first);
    }
  }
}

bool DriverState::vouchesFor(CUdeviceptr address, std::size_t bytes) const noexcept {
  const auto found = allocation(address);
  if (!found) return false;
  const auto [base, size] = *found;
  if (bytes > size || address - base > size - bytes) return false;
  std::lock_guard lock(m_mutex);
  return !m_managedBases.contains(base) && !m_inaccessible.contains(base);
}

bool DriverState::isManaged(CUdeviceptr address) const noexcept {
  const auto found = allocation(address);
  if (!found) return false;
  std::lock_guard lock(m_mutex);
  return m_managedBases.contains(found->first);
}

std::optional<std::pair<CUdeviceptr, std::size_t>> DriverState::allocation(CUdeviceptr address) const noexcept {
  std::lock_guard lock(m_mutex);
  auto it = m_allocations.upper_bound(address);
  if (it == m_allocations.begin()) return std::nullopt;
  --it;
  if (address - it->first >= it->second) return std::nullopt;
  return *it;
}

namespace detail {
ResultCache& resultCache() noexcept {
  static auto* const cache = new ResultCache();  // leaked: used until the process's last call
  return *cache;
}
}  // namespace detail

// ---- DriverCall ---------------------------------------------------------------------------------

namespace {

// DriverCalls alive on this thread (at most one: the session's mutex is not recursive).
thread_local int t_driverCalls = 0;

// The session, taken after managed memory went back to the device: the hand-back makes calls of
// its own, so it must run before this thread holds the session. The common case (no managed
// memory on the host) costs one relaxed load.
CuClient::Session sessionAfterHandBack() noexcept {
  if (DriverState::get().managedHandBackDue().load(std::memory_order_relaxed)) [[unlikely]] {
    handBackManagedMemory();
  }
  return CuClient::get().session();
}

}  // namespace

bool DriverCall::heldByThisThread() noexcept { return t_driverCalls > 0; }

DriverCall::~DriverCall() { --t_driverCalls; }

DriverCall::DriverCall() : m_session(sessionAfterHandBack()) {
  ++t_driverCalls;
  const auto wanted = wireHandle(DriverState::get().current());
  auto& told = DriverState::get().workerContext();
  if (wanted == told || !m_session.usable()) return;
  std::vector<std::byte> args;
  api::ArgWriter(args).put(wanted);
  if (m_session.enqueue(Method::flytSetContext, args) == CUDA_SUCCESS) told = wanted;
}

Outcome DriverCall::call(Method method, std::span<const std::byte> args, std::span<const std::byte> payload,
                         std::optional<RegionBulk> region, bool reportEarlier) noexcept {
  auto outcome = m_session.call(method, args, payload, region);
  settle(outcome, reportEarlier);
  return outcome;
}

void DriverCall::settle(Outcome& outcome, bool reportEarlier) noexcept {
  auto& pending = DriverState::get().pendingError();
  // A call that fails itself reports its own error (an earlier failure is usually part of the
  // same operation: the chunks of one copy); one that succeeds without synchronising keeps it.
  const bool reports = reportEarlier && outcome.error == CUDA_SUCCESS;
  if (outcome.earlier != CUDA_SUCCESS && !reportEarlier && outcome.error == CUDA_SUCCESS) {
    int none = CUDA_SUCCESS;
    pending.compare_exchange_strong(none, static_cast<int>(outcome.earlier));
  }
  if (reports) {
    const int earlier = pending.exchange(CUDA_SUCCESS);
    if (outcome.earlier != CUDA_SUCCESS) {
      outcome.error = outcome.earlier;
    } else if (earlier != CUDA_SUCCESS) {
      outcome.error = static_cast<CUresult>(earlier);
    }
  }
}

CUresult DriverCall::enqueue(Method method, std::span<const std::byte> args, std::span<const std::byte> payload,
                             std::optional<RegionBulk> region) noexcept {
  return m_session.enqueue(method, args, payload, region);
}

}  // namespace cu
}  // namespace flyt::interpose
