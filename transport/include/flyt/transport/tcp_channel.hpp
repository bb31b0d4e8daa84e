// TcpChannel: a Channel over one TCP connection (plain POSIX sockets), for a client and a GPU node
// on different hosts. Endpoints are tcp://host:port with an IPv4 address, a bracketed IPv6 address
// (tcp://[::1]:7070) or a host name (resolved with getaddrinfo; every address is tried in order).
// The frame format is described at the top of src/tcp_channel.cpp.
//
// Failure detection: EOF, ECONNRESET and EPIPE are kDisconnected at once (sends use MSG_NOSIGNAL, so
// a closed peer never raises SIGPIPE). A silent peer is kTimeout from receive(timeout). A send that
// makes no progress for config.peerTimeout fails (kTimeout if no byte of the frame left, otherwise
// kDisconnected, since the stream is then cut mid-frame). Once a frame has started arriving, the
// rest of it must keep flowing: a stall longer than config.peerTimeout is kDisconnected. Keepalive
// and TCP_USER_TIMEOUT are set so that a host that vanished without a FIN/RST is noticed within
// about config.peerTimeout even while nothing is being sent. Malformed input (bad magic, sizes over
// config.maxMessageBytes / config.maxPayloadBytes, an inconsistent segment table, an undecodable
// message) is kMalformed; the channel then shuts its socket down and stays broken.
#pragma once

#include <capnp/message.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <span>

#include "flyt/transport/channel.hpp"
#include "flyt/transport/config.hpp"
#include "flyt/transport/endpoint.hpp"

namespace flyt::transport {

// TcpChannel honours Channel::setPayloadSink: an empty sink restores the default, a channel-owned
// buffer that is reused by a later receive() once the Incoming holding it has been destroyed
// (otherwise a fresh one is allocated).
class TcpChannel : public Channel {};

// Listens on `ep` (port 0 = any free port; Listener::endpoint() reports the real one). The socket
// has SO_REUSEADDR. Channels it accepts are TcpChannels (the owner may downcast to install a sink).
// Fails with kInvalidArgument for a non-tcp endpoint or a host that does not resolve, kSystem when
// nothing can be bound.
[[nodiscard]] Result<std::unique_ptr<Listener>> listenTcp(const Endpoint& ep,
                                                          const TransportConfig& config);

// Connects to `ep`, trying each resolved address until config.connectTimeout is spent in total.
// Fails with kDisconnected when nobody listens (connection refused), kTimeout when the server does
// not answer in time, kInvalidArgument for a bad endpoint or unknown host. The returned channel is a
// TcpChannel.
[[nodiscard]] Result<std::unique_ptr<Channel>> connectTcp(const Endpoint& ep,
                                                          const TransportConfig& config);

}  // namespace flyt::transport
