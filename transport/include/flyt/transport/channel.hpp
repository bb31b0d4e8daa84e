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
#include <functional>
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

// Chooses where the inline payload of the message being received is written.
//
// Called by receive(), on the receiving thread, once per message whose payload is non-empty, after
// the message has been read and validated and before any payload byte is stored. `message` is the
// decoded message (the sink may read it, e.g. to pick a staging slot from a BulkRef; it must not keep
// it); `payloadBytes` is the exact payload length announced by the sender.
//
// The sink returns a span of at least `payloadBytes` bytes; the payload is received straight into
// its first `payloadBytes` bytes (no intermediate copy beyond at most one socket read buffer,
// 64 KiB). The memory stays owned by the sink's owner, who must keep it valid and must not reuse it
// until the Incoming returned by that receive() is destroyed: Incoming::payload() points into it.
//
// Channels whose payloads already arrive in memory both sides share (shm) never call it.
//
// If the sink returns an error (or a span that is too small, or throws a kj::Exception), the
// payload is read and discarded, receive() fails with that error (kInvalidArgument for a short span,
// kMalformed for an exception) and the channel stays usable.
using PayloadSink = std::function<Result<std::span<std::byte>>(capnp::MessageReader& message,
                                                                std::size_t payloadBytes)>;

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

  // True when both ends are on one host and can share memory: the session may then set up a
  // DataRegion (data_region.hpp) and name host memory by BulkRef instead of sending it.
  [[nodiscard]] virtual bool sharesHostMemory() const { return false; }

  // How long receive() busy-polls before it sleeps until a message arrives (channels that cannot
  // poll ignore it). Polling longer costs the caller's CPU while it waits but saves the wake-up,
  // which takes from a few to a few hundred microseconds depending on the host. Call it from the
  // receiving thread, or before receiving starts.
  virtual void setReceiveSpin(std::chrono::microseconds /*spin*/) {}

  // Installs `sink` for inline payloads received from now on (see PayloadSink). Channels that
  // receive payloads into memory of their own (shm) ignore it. Call it from the receiving thread,
  // or before receiving starts.
  virtual void setPayloadSink(PayloadSink /*sink*/) {}

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
