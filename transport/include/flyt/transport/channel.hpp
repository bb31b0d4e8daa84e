// A Channel moves Cap'n Proto messages, each optionally followed by an inline payload, between the two
// ends of one session. Implementations: ShmChannel (iceoryx, same host), TcpChannel (any host),
// LoopbackChannel (in-process, for tests and as a benchmark baseline). Layers above see only this
// interface; nothing above transport/ branches on which implementation it holds.
//
// Threading: one thread may call send() while another calls receive(); two threads must not call
// send() (or receive()) on the same channel at once.
//
// Failure: a peer that is gone surfaces as Errc::kDisconnected from send() or receive() as soon as the
// implementation can tell (immediately for a closed socket or a dead process on this host); a peer
// that is alive but silent surfaces as Errc::kTimeout when receive()'s timeout expires. A channel
// that has reported kDisconnected or kMalformed stays broken: every later call fails the same way.
#pragma once

#include <capnp/message.h>
#include <kj/function.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "flyt/transport/error.hpp"

namespace flyt::transport {

// One received message. Owns the memory it points into (an iceoryx chunk, a socket buffer, a
// loopback builder) until destroyed; the reader and payload are valid only while it lives.
class Incoming {
 public:
  class Body {
   public:
    virtual ~Body() = default;
    virtual capnp::MessageReader& reader() = 0;
    [[nodiscard]] virtual std::span<const std::byte> payload() const = 0;
  };

  explicit Incoming(std::unique_ptr<Body> body) : m_body(std::move(body)) {}

  [[nodiscard]] capnp::MessageReader& message() { return m_body->reader(); }
  template <class T>
  [[nodiscard]] typename T::Reader root() {
    return m_body->reader().getRoot<T>();
  }
  // Inline payload bytes that followed the message; empty when none was sent.
  [[nodiscard]] std::span<const std::byte> payload() const { return m_body->payload(); }

 private:
  std::unique_ptr<Body> m_body;
};

// Fills in the message to send. Called exactly once, synchronously, inside send(); the builder may
// live in transport-owned memory (an iceoryx chunk), so the callee must not keep references to it.
using BuildMessage = kj::FunctionParam<void(capnp::MessageBuilder&)>;

class Channel {
 public:
  virtual ~Channel() = default;
  Channel() = default;
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Builds one message with `build` and sends it, followed by `payload` (copied or streamed before
  // send returns; the caller may reuse the buffer afterwards). Fails with kTooLarge if the message
  // exceeds the configured maximum or payload.size() > maxPayloadBytes().
  [[nodiscard]] virtual Result<void> send(BuildMessage build,
                                          std::span<const std::byte> payload = {}) = 0;

  // Waits up to `timeout` for the next message, in send order.
  [[nodiscard]] virtual Result<Incoming> receive(std::chrono::milliseconds timeout) = 0;

  // Largest inline payload send() accepts. Larger data goes through a DataRegion.
  [[nodiscard]] virtual std::size_t maxPayloadBytes() const = 0;

  // "shm://name", "tcp://[::1]:7070 <- 127.0.0.1:51234", "loopback"; for logs and errors.
  [[nodiscard]] virtual std::string describe() const = 0;
};

// Accepts the server ends of new channels.
class Listener {
 public:
  virtual ~Listener() = default;
  Listener() = default;
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Waits up to `timeout` for a new peer; kTimeout when none came.
  [[nodiscard]] virtual Result<std::unique_ptr<Channel>> accept(std::chrono::milliseconds timeout) = 0;

  // The endpoint peers should connect to (with the real port when listening on port 0).
  [[nodiscard]] virtual std::string endpoint() const = 0;
};

}  // namespace flyt::transport
