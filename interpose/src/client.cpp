// The runtime facade's one SessionClient, and the per-thread last error.
#include "client.hpp"

#include "session_client_impl.hpp"

namespace flyt::interpose {
namespace {

thread_local cudaError_t t_lastError = cudaSuccess;

}  // namespace

void setLastError(cudaError_t error) noexcept { t_lastError = error; }

cudaError_t lastError(bool reset) noexcept {
  const cudaError_t error = t_lastError;
  if (reset) t_lastError = cudaSuccess;
  return error;
}

cudaError_t CudartTraits::fromStatus(wire::TransportStatus status, std::int32_t verbatim) noexcept {
  switch (status) {
    case wire::TransportStatus::OK: return static_cast<cudaError_t>(verbatim);
    case wire::TransportStatus::UNSUPPORTED: return cudaErrorNotSupported;
    case wire::TransportStatus::MALFORMED: return cudaErrorInvalidValue;
    case wire::TransportStatus::DISCONNECTED:
    case wire::TransportStatus::TIMEOUT:
    case wire::TransportStatus::BUSY: return cudaErrorDevicesUnavailable;  // BUSY answers only a Hello
  }
  return cudaErrorUnknown;
}

template class SessionClient<CudartTraits>;

}  // namespace flyt::interpose
