// Entry points that pick the channel implementation from an endpoint. This is the only place that
// branches on the kind of transport; everything above it holds a Channel or a Listener.
#pragma once

#include <memory>

#include "flyt/transport/channel.hpp"
#include "flyt/transport/config.hpp"
#include "flyt/transport/endpoint.hpp"

namespace flyt::transport {

// Listens on `endpoint` (tcp://host:port or shm://name). For shm, a RouDi must already be reachable
// on this host (a serving process starts one with EmbeddedRouDi::startIfAbsent first).
[[nodiscard]] Result<std::unique_ptr<Listener>> listen(const Endpoint& endpoint,
                                                       const TransportConfig& config);

// Connects to `endpoint` within config.connectTimeout. Does not perform the session handshake.
[[nodiscard]] Result<std::unique_ptr<Channel>> connect(const Endpoint& endpoint,
                                                       const TransportConfig& config);

}  // namespace flyt::transport
