// Host functions in stream order (cuLaunchHostFunc, cuStreamAddCallback): the calling thread waits
// for the stream's earlier work, then runs the function itself. The order CUDA promises holds (the
// function runs after everything before it; later work is sent only after it returned); what is
// lost is the overlap of the host function with the caller. A failed wait is the callback's status.
#include <cuda.h>

#include "driver_client.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {
namespace {

CUresult hostFunction(CUstream stream, CUhostFn fn, void* userData) {
  if (fn == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult error = cuStreamSynchronize(stream); error != CUDA_SUCCESS) return error;
  fn(userData);
  return CUDA_SUCCESS;
}

CUresult streamCallback(CUstream stream, CUstreamCallback callback, void* userData, unsigned flags) {
  if (callback == nullptr || flags != 0) return CUDA_ERROR_INVALID_VALUE;
  const CUresult status = cuStreamSynchronize(stream);
  if (status == CUDA_ERROR_DEVICE_UNAVAILABLE || status == CUDA_ERROR_INVALID_HANDLE) return status;
  callback(stream, status, userData);
  return CUDA_SUCCESS;
}

}  // namespace
}  // namespace flyt::interpose::cu

using namespace flyt::interpose::cu;

FLYT_CU_EXPORT CUresult cuLaunchHostFunc(CUstream hStream, CUhostFn fn, void* userData) {
  return hostFunction(hStream, fn, userData);
}
FLYT_CU_EXPORT CUresult cuLaunchHostFunc_ptsz(CUstream hStream, CUhostFn fn, void* userData) {
  return hostFunction(perThread(hStream), fn, userData);
}
FLYT_CU_EXPORT CUresult cuStreamAddCallback(CUstream hStream, CUstreamCallback callback, void* userData,
                                            unsigned int flags) {
  return streamCallback(hStream, callback, userData, flags);
}
FLYT_CU_EXPORT CUresult cuStreamAddCallback_ptsz(CUstream hStream, CUstreamCallback callback, void* userData,
                                                 unsigned int flags) {
  return streamCallback(perThread(hStream), callback, userData, flags);
}
