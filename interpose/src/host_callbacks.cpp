// Host functions in stream order: cudaLaunchHostFunc and cudaStreamAddCallback (+ _ptsz).
//
// They run in the application's process, where their code and data are. Interim implementation:
// the calling thread synchronises the stream through the session (a cudaStreamSynchronize call),
// runs the function itself, then returns. Work the application enqueues after it is not sent before
// the call returns, so the function runs after everything before it in the stream and before
// everything after it: the order CUDA promises.
// Differences from NVIDIA's runtime, none of which a correct program depends on:
//  - the calling thread waits for the stream (NVIDIA's returns at once and runs the function on a
//    runtime thread); work on other streams is not held back, but the caller is;
//  - the function runs on the calling thread, so it may call CUDA (NVIDIA forbids it; here it works);
//  - an error of the stream is returned by the call (and, for cudaStreamAddCallback, passed to the
//    callback as its status), so the next synchronising call does not report it again.
//    cudaLaunchHostFunc does not run its function after an error, as NVIDIA's does not.
// TODO(perf): the worker reports when the stream reaches a host-function marker (a cudaLaunchHostFunc
// of its own) and a client receive thread runs the function, so the caller does not wait.
#include <cuda_runtime_api.h>

#include "client.hpp"

#define FLYT_CUDART_EXPORT extern "C" __attribute__((visibility("default")))

FLYT_CUDART_EXPORT cudaError_t cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void* userData) {
  using flyt::interpose::recordResult;
  if (fn == nullptr) return recordResult(cudaErrorInvalidValue);
  if (const cudaError_t reached = ::cudaStreamSynchronize(stream); reached != cudaSuccess) {
    return recordResult(reached);
  }
  fn(userData);
  return cudaSuccess;
}

FLYT_CUDART_EXPORT cudaError_t cudaStreamAddCallback(cudaStream_t stream, cudaStreamCallback_t callback,
                                                     void* userData, unsigned int flags) {
  using flyt::interpose::recordResult;
  if (callback == nullptr || flags != 0) return recordResult(cudaErrorInvalidValue);
  const cudaError_t status = ::cudaStreamSynchronize(stream);
  if (status == cudaErrorDevicesUnavailable) return recordResult(status);  // no session: nothing ran
  callback(stream, status, userData);
  return recordResult(status);
}

// Under --default-stream per-thread, stream 0 means the calling thread's default stream.
FLYT_CUDART_EXPORT cudaError_t cudaLaunchHostFunc_ptsz(cudaStream_t stream, cudaHostFn_t fn, void* userData) {
  return cudaLaunchHostFunc(stream == nullptr ? cudaStreamPerThread : stream, fn, userData);
}

FLYT_CUDART_EXPORT cudaError_t cudaStreamAddCallback_ptsz(cudaStream_t stream, cudaStreamCallback_t callback,
                                                          void* userData, unsigned int flags) {
  return cudaStreamAddCallback(stream == nullptr ? cudaStreamPerThread : stream, callback, userData, flags);
}
