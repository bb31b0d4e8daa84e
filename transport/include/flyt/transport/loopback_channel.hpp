// In-process channel pair: what one end sends, the other receives, through a mutex-guarded queue.
// Messages are handed over without serialisation (the receiver reads the sender's builder segments);
// payloads are copied once. Used by unit tests and as the in-process baseline in benchmarks.
#pragma once

#include <memory>
#include <utility>

#include "flyt/transport/channel.hpp"
#include "flyt/transport/config.hpp"

namespace flyt::transport {

// Both ends may live on different threads. Destroying one end makes the other's send() and
// receive() fail with kDisconnected (receive() first drains what was already queued).
[[nodiscard]] std::pair<std::unique_ptr<Channel>, std::unique_ptr<Channel>> makeLoopbackPair(
    const TransportConfig& config = {});

}  // namespace flyt::transport
