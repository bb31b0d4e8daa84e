// The runtime facade's session client (Flyt's libcudart.so.13): SessionClient (session_client.hpp)
// with the CUDA runtime's method ids and errors, and the per-thread last error of the runtime API.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "flyt/api/methods.hpp"
#include "session_client.hpp"

namespace flyt::interpose {

// The calling thread's last error (cudaGetLastError / cudaPeekAtLastError).
void setLastError(cudaError_t error) noexcept;
[[nodiscard]] cudaError_t lastError(bool reset) noexcept;

struct CudartTraits {
  using Method = api::Method;
  using Error = cudaError_t;
  static constexpr Error kSuccess = cudaSuccess;
  static constexpr Error kDevicesUnavailable = cudaErrorDevicesUnavailable;
  static constexpr Error kUnknown = cudaErrorUnknown;
  static constexpr transport::SessionApi kApi = transport::SessionApi::kRuntime;
  static Error fromStatus(wire::TransportStatus status, std::int32_t verbatim) noexcept;
  // An earlier asynchronous call failed: it becomes the thread's last error, as in NVIDIA's runtime.
  static void noteEarlierFailure(Error error) noexcept { setLastError(error); }
};

using Client = SessionClient<CudartTraits>;
using CallOutcome = Client::Outcome;

// Records a failing result as the thread's last error and returns it: every exported function
// returns through this, as NVIDIA's runtime does.
inline cudaError_t recordResult(cudaError_t error) noexcept {
  if (error != cudaSuccess) setLastError(error);
  return error;
}

}  // namespace flyt::interpose
