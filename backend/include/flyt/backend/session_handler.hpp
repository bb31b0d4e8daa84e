// What a worker does with the messages of its one session after the handshake.
//
// The worker process (flyt-worker) owns the channel and runs the receive loop; a SessionHandler
// turns each message (Batch, RegionUpdate, Goodbye) into work on the GPU (or on the GPU stand-in)
// and sends the replies. One handler per session; called from one thread.
#pragma once

#include <memory>
#include <string>

#include "flyt/backend/memory_quota.hpp"
#include "flyt/backend/session_limits.hpp"
#include "flyt/transport/channel.hpp"
#include "flyt/transport/handshake.hpp"

namespace flyt::backend {

enum class SessionState { kOpen, kEnded };

class SessionHandler {
 public:
  virtual ~SessionHandler() = default;

  // Handles one message, sending any reply on `channel`. kEnded after Goodbye: the worker then
  // releases the session and exits. An error means the channel broke or the client sent something
  // that ends the session (it has already been answered with status malformed where possible).
  [[nodiscard]] virtual transport::Result<SessionState> handle(transport::Incoming& message,
                                                               transport::Channel& channel) = 0;
};

// Which executor runs the session's calls.
enum class ExecutorKind {
  kAuto,     // the GPU when the CUDA driver finds one, else the stand-in (logged at warn level)
  kCuda,     // the GPU; fail when there is none
  kStandIn,  // the host-memory GPU stand-in, a test double for machines without a GPU
};

struct SessionOptions {
  ExecutorKind executor = ExecutorKind::kAuto;
  transport::TransportConfig transport;
  // Capture the process's stdout (device printf) and send it to the application with each reply.
  // Set for worker processes; the handler then owns fd 1 for the life of the process.
  bool captureOutput = true;
  // What the session may use. The executor applies the SM share (a green context, or only the
  // reported count under MPS); the handler charges allocations to `memoryQuota`.
  SessionLimits limits;
  // Shared with whoever changes the limit while the session runs (the worker's control thread);
  // null: a quota of limits.memoryBytes that nobody else changes.
  std::shared_ptr<MemoryQuota> memoryQuota;
};

// Creates the handler for a session whose Hello was `hello`. Fails when the requested executor is
// unavailable (kCuda without a GPU, or the SM share cannot be set up), with a message naming why.
[[nodiscard]] transport::Result<std::unique_ptr<SessionHandler>> makeSessionHandler(
    const transport::HelloInfo& hello, const SessionOptions& options);

}  // namespace flyt::backend
