// Stream capture as the process sees it, and the capture state of a stream.
//
// A stream can only be capturing while some capture is active: begun (cuStreamBeginCapture) and
// not ended (cuStreamEndCapture) — a stream that joins a capture (waiting on an event of a
// capturing stream) joins one of those. So while no capture is active in the process, every stream's
// capture state is CU_STREAM_CAPTURE_STATUS_NONE and is answered here: PyTorch's caching allocator
// asks on every allocation. While one is active, the worker is asked (a capture invalidated by an
// illegal call is only known there).
#include <cuda.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>

#include "driver_client.hpp"
#include "forward.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {
namespace {

struct Captures {
  std::mutex mutex;
  std::map<std::pair<std::uintptr_t, std::size_t>, int> active;  // (stream, thread for per-thread) -> begun
  std::atomic<bool> any{false};
};
Captures& captures() noexcept {
  static auto* const state = new Captures;  // leaked: stubs may run during exit
  return *state;
}

std::pair<std::uintptr_t, std::size_t> captureKey(CUstream stream) {
  const auto handle = reinterpret_cast<std::uintptr_t>(stream);
  const bool perThread = stream == CU_STREAM_PER_THREAD;
  return {handle, perThread ? std::hash<std::thread::id>{}(std::this_thread::get_id()) : 0};
}

// Wire: cuStreamGetCaptureInfo_v3 {u64 stream} -> {i32 status, u64 id, u64 graph}.
CUresult captureInfo(CUstream stream, CUstreamCaptureStatus* status, cuuint64_t* id, CUgraph* graph,
                     const CUgraphNode** dependencies, const CUgraphEdgeData** edgeData, size_t* count) {
  if (status == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  if (noCaptureActive()) {
    *status = CU_STREAM_CAPTURE_STATUS_NONE;
    if (id != nullptr) *id = 0;
    if (graph != nullptr) *graph = nullptr;
    if (dependencies != nullptr) *dependencies = nullptr;
    if (edgeData != nullptr) *edgeData = nullptr;
    if (count != nullptr) *count = 0;
    return CUDA_SUCCESS;
  }
  std::vector<std::byte> args;
  api::ArgWriter(args).put(wireHandle(stream));
  auto outcome = DriverCall().call(Method::cuStreamGetCaptureInfo_v3, args);
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  std::int32_t state = 0;
  std::uint64_t captureId = 0, graphId = 0;
  api::ArgReader reader(outcome.results);
  if (!reader.get(state) || !reader.get(captureId) || !reader.get(graphId)) return CUDA_ERROR_UNKNOWN;
  *status = static_cast<CUstreamCaptureStatus>(state);
  const bool active = *status == CU_STREAM_CAPTURE_STATUS_ACTIVE;
  if (active && (dependencies != nullptr || edgeData != nullptr || count != nullptr)) return CUDA_ERROR_NOT_SUPPORTED;
  if (id != nullptr) *id = captureId;
  if (graph != nullptr) *graph = reinterpret_cast<CUgraph>(static_cast<std::uintptr_t>(graphId));
  if (dependencies != nullptr) *dependencies = nullptr;
  if (edgeData != nullptr) *edgeData = nullptr;
  if (count != nullptr) *count = 0;
  return CUDA_SUCCESS;
}

}  // namespace

void captureBegun(CUstream stream) noexcept {
  auto& c = captures();
  std::lock_guard lock(c.mutex);
  ++c.active[captureKey(stream)];
  c.any.store(true, std::memory_order_release);
}

void captureEnded(CUstream stream) noexcept {
  auto& c = captures();
  std::lock_guard lock(c.mutex);
  auto it = c.active.find(captureKey(stream));
  if (it == c.active.end()) return;
  if (--it->second <= 0) c.active.erase(it);
  c.any.store(!c.active.empty(), std::memory_order_release);
}

bool noCaptureActive() noexcept { return !captures().any.load(std::memory_order_acquire); }

}  // namespace flyt::interpose::cu

using namespace flyt::interpose::cu;

FLYT_CU_EXPORT CUresult cuStreamGetCaptureInfo_v3(CUstream hStream, CUstreamCaptureStatus* captureStatus_out,
                                                  cuuint64_t* id_out, CUgraph* graph_out,
                                                  const CUgraphNode** dependencies_out,
                                                  const CUgraphEdgeData** edgeData_out, size_t* numDependencies_out) {
  return captureInfo(hStream, captureStatus_out, id_out, graph_out, dependencies_out, edgeData_out,
                     numDependencies_out);
}

FLYT_CU_EXPORT CUresult cuStreamGetCaptureInfo_v3_ptsz(CUstream hStream, CUstreamCaptureStatus* captureStatus_out,
                                                       cuuint64_t* id_out, CUgraph* graph_out,
                                                       const CUgraphNode** dependencies_out,
                                                       const CUgraphEdgeData** edgeData_out,
                                                       size_t* numDependencies_out) {
  return captureInfo(perThread(hStream), captureStatus_out, id_out, graph_out, dependencies_out, edgeData_out,
                     numDependencies_out);
}
