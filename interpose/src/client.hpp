// The client side of a session: the one object the interposed runtime cannot avoid making global.
// It connects lazily, on the first forwarded call, to FLYT_SERVER (set by `flyt run`), and keeps
// the batch of asynchronous calls, the sequence numbers, and the per-thread last error.
//
// Threading: every public function may be called from any application thread; calls are
// serialised by one mutex (TODO(perf): a per-thread batch and a receive thread).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "flyt/api/methods.hpp"
#include "flyt/transport/channel.hpp"
#include "flyt/transport/config.hpp"

namespace flyt::interpose {

// What came back for one synchronous call.
struct CallOutcome {
  cudaError_t error = cudaSuccess;
  std::vector<std::byte> results;  // encoded out-arguments (flyt/api/codec.hpp)
  std::vector<std::byte> payload;  // bulk data returned inline (device-to-host copies)
};

class Client {
 public:
  // The process's client, connecting on first use. Never null: a client that could not connect
  // answers every call with cudaErrorDevicesUnavailable (and logged why, once).
  static Client& get() noexcept;

  // Appends an asynchronous call to the batch (flushing first if the batch is full). Returns the
  // error to report now: cudaSuccess, or cudaErrorDevicesUnavailable when the session is gone.
  [[nodiscard]] cudaError_t enqueue(api::Method method, std::span<const std::byte> args,
                                    std::span<const std::byte> payload = {}) noexcept;

  // Sends the batch followed by this call and waits for its result. Errors of earlier asynchronous
  // calls that arrive with the reply become the calling thread's last error.
  [[nodiscard]] CallOutcome call(api::Method method, std::span<const std::byte> args,
                                 std::span<const std::byte> payload = {}) noexcept;

  // Largest inline payload one call may carry on this session's channel.
  [[nodiscard]] std::size_t maxPayloadBytes() noexcept;

  // Sends what is batched and says Goodbye; later calls fail with cudaErrorDevicesUnavailable.
  void close() noexcept;

 private:
  Client() = default;
  bool connectLocked() noexcept;
  cudaError_t flushLocked(bool wantsReply) noexcept;
  CallOutcome brokenLocked(const std::string& why) noexcept;

  struct Pending {
    std::uint64_t sequence;
    api::Method method;
    std::vector<std::byte> args;
    std::uint64_t payloadOffset;
    std::uint64_t payloadBytes;
  };

  std::mutex m_mutex;
  bool m_tried = false;
  bool m_broken = false;
  std::unique_ptr<transport::Channel> m_channel;
  transport::TransportConfig m_config;
  std::uint64_t m_nextSequence = 1;
  std::vector<Pending> m_batch;
  std::vector<std::byte> m_batchPayload;
};

// The calling thread's last error (cudaGetLastError / cudaPeekAtLastError).
void setLastError(cudaError_t error) noexcept;
[[nodiscard]] cudaError_t lastError(bool reset) noexcept;

// Records a failing result as the thread's last error and returns it: every exported function
// returns through this, as NVIDIA's runtime does.
inline cudaError_t recordResult(cudaError_t error) noexcept {
  if (error != cudaSuccess) setLastError(error);
  return error;
}

}  // namespace flyt::interpose
