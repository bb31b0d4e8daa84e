// Stream queries that need more than the generated stubs: the capture state of a stream.
#include <cuda.h>

#include "driver_client.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {
namespace {

// Wire: cuStreamGetCaptureInfo_v3 {u64 stream} -> {i32 status, u64 id, u64 graph}.
CUresult captureInfo(CUstream stream, CUstreamCaptureStatus* status, cuuint64_t* id, CUgraph* graph,
                     const CUgraphNode** dependencies, const CUgraphEdgeData** edgeData, size_t* count) {
  if (status == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
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
