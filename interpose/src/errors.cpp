// Error and version queries, answered on the client (kind "local" in api/cudart.toml).
#include <cuda_runtime_api.h>

#include "client.hpp"
#include "error_names.hpp"

#define FLYT_CUDART_EXPORT extern "C" __attribute__((visibility("default")))

FLYT_CUDART_EXPORT cudaError_t cudaGetLastError(void) {
  return flyt::interpose::lastError(/*reset=*/true);
}

FLYT_CUDART_EXPORT cudaError_t cudaPeekAtLastError(void) {
  return flyt::interpose::lastError(/*reset=*/false);
}

FLYT_CUDART_EXPORT const char* cudaGetErrorName(cudaError_t error) {
  return flyt::interpose::errorName(error);
}

FLYT_CUDART_EXPORT const char* cudaGetErrorString(cudaError_t error) {
  return flyt::interpose::errorString(error);
}

FLYT_CUDART_EXPORT cudaError_t cudaRuntimeGetVersion(int* runtimeVersion) {
  if (runtimeVersion == nullptr) return flyt::interpose::recordResult(cudaErrorInvalidValue);
  *runtimeVersion = CUDART_VERSION;  // the toolkit Flyt's runtime was built against
  return cudaSuccess;
}
