// TcpChannel — wire format (owned by this file).
//
// A TCP connection carries a sequence of frames in each direction. One frame:
//
//   offset  size  field
//   0       4     magic         0x54594c46, i.e. the bytes "FLYT"
//   4       2     version       1
//   6       2     flags         0 (reserved; a non-zero value is rejected)
//   8       8     messageBytes  length of the Cap'n Proto message that follows, a multiple of 8
//   16      8     payloadBytes  length of the inline payload that follows the message
//   24      messageBytes        the message in Cap'n Proto standard serialisation:
//                               u32 segmentCount-1, u32 words per segment, u32 0 padding to 8 bytes,
//                               then the segments back to back
//   24+messageBytes  payloadBytes  the payload, raw bytes
//
// All integers are little-endian. The layout is pinned by static_asserts in tcp_framing.hpp. A
// receiver checks the header against config.maxMessageBytes / config.maxPayloadBytes before it
// allocates anything, checks that the segment table accounts for exactly messageBytes, and walks the
// message once inside kj::runCatchingExceptions; any failure is kMalformed and breaks the channel.
//
// Sending is one scatter-gather sendmsg of header + segment table + the builder's segments + the
// caller's payload (nothing is copied); receiving reads the message into a word-aligned array and the
// payload straight into its destination (the PayloadSink's span or a pooled buffer).
#include "flyt/transport/tcp_channel.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <vector>

#include <fmt/format.h>
#include <kj/exception.h>
#include <spdlog/spdlog.h>

#include "flyt/transport/sys.hpp"
#include "tcp_framing.hpp"
#include "tcp_socket.hpp"

namespace flyt::transport {
namespace {

using namespace tcp;

// Socket reads of header + message go through a buffer of this size (one recv usually brings a
// whole small frame); payload reads at least this large go straight to their destination.
constexpr std::size_t kReadBufferBytes = 64 * 1024;
// A pooled default payload buffer larger than this is freed rather than kept for reuse.
constexpr std::size_t kMaxRetainedPayloadBytes = 64ULL << 20;

class PayloadPool {
 public:
  struct Buffer {
    std::unique_ptr<std::byte[]> bytes;
    std::size_t capacity = 0;
  };

  Buffer take(std::size_t size) {
    {
      std::lock_guard lock(m_mutex);
      if (m_spare.bytes && m_spare.capacity >= size) return std::exchange(m_spare, {});
    }
    // Not value-initialised: the payload overwrites every byte.
    return {std::make_unique_for_overwrite<std::byte[]>(size), size};
  }

  void give(Buffer buffer) {
    if (buffer.capacity > kMaxRetainedPayloadBytes) return;
    std::lock_guard lock(m_mutex);
    if (buffer.capacity > m_spare.capacity) m_spare = std::move(buffer);
  }

 private:
  std::mutex m_mutex;
  Buffer m_spare;
};

class TcpBody final : public Incoming::Body {
 public:
  TcpBody(kj::Array<capnp::word> words, kj::Array<kj::ArrayPtr<const capnp::word>> segments)
      : m_words(kj::mv(words)),
        m_segments(kj::mv(segments)),
        m_reader(std::make_unique<capnp::SegmentArrayMessageReader>(
            m_segments.asPtr(), tcp::readerOptions(m_words.size()))) {}

  ~TcpBody() override {
    if (m_owned.bytes) {
      if (auto pool = m_pool.lock()) pool->give(std::move(m_owned));
    }
  }

  void setPayload(std::span<const std::byte> payload) { m_payload = payload; }
  void ownPayload(PayloadPool::Buffer buffer, std::weak_ptr<PayloadPool> pool) {
    m_owned = std::move(buffer);
    m_pool = std::move(pool);
  }

  capnp::MessageReader& reader() override { return *m_reader; }
  std::span<const std::byte> payload() const override { return m_payload; }

 private:
  kj::Array<capnp::word> m_words;
  kj::Array<kj::ArrayPtr<const capnp::word>> m_segments;
  // Held by pointer: capnp readers have noexcept(false) destructors.
  std::unique_ptr<capnp::SegmentArrayMessageReader> m_reader;
  PayloadPool::Buffer m_owned;
  std::weak_ptr<PayloadPool> m_pool;
  std::span<const std::byte> m_payload;
};

class TcpChannelImpl final : public TcpChannel {
 public:
  TcpChannelImpl(Fd fd, const TransportConfig& config, std::string description)
      : m_fd(std::move(fd)),
        m_config(config),
        m_description(std::move(description)),
        m_readBuffer(std::make_unique_for_overwrite<std::byte[]>(kReadBufferBytes)),
        m_pool(std::make_shared<PayloadPool>()) {}

  Result<void> send(BuildMessage build, std::span<const std::byte> payload) override;
  Result<Incoming> receive(std::chrono::milliseconds timeout) override;
  std::size_t maxPayloadBytes() const override { return m_config.maxPayloadBytes; }
  std::string describe() const override { return m_description; }
  void setPayloadSink(PayloadSink sink) override { m_sink = std::move(sink); }

 private:
  Result<void> writeAll(std::vector<iovec>& iov);
  Result<void> waitReadable(std::chrono::milliseconds timeout);
  Result<void> readExact(std::byte* dst, std::size_t size, const char* what);
  Result<std::size_t> recvSome(std::byte* dst, std::size_t size, int flags, const char* what);
  Result<std::span<std::byte>> payloadDestination(TcpBody& body, std::size_t size);
  Result<void> discard(std::size_t size);
  std::unexpected<Error> breakWith(Errc code, std::string message, int sysErrno = 0);
  std::unexpected<Error> brokenError();

  Fd m_fd;
  TransportConfig m_config;
  std::string m_description;
  PayloadSink m_sink;
  std::unique_ptr<std::byte[]> m_readBuffer;
  std::size_t m_readBegin = 0;
  std::size_t m_readEnd = 0;
  std::shared_ptr<PayloadPool> m_pool;
  std::atomic<bool> m_broken{false};
  std::mutex m_brokenMutex;
  Error m_brokenError{Errc::kDisconnected, ""};
};

std::unexpected<Error> TcpChannelImpl::breakWith(Errc code, std::string message, int sysErrno) {
  std::lock_guard lock(m_brokenMutex);
  if (!m_broken.load()) {
    m_brokenError = Error{code, fmt::format("{}: {}", m_description, message), sysErrno};
    tcp::log().warn("closing {}", m_brokenError.describe());
    // shutdown, not close: the other thread may be inside send()/receive() on this descriptor, and
    // a closed number could be reused by an unrelated file. The destructor closes it.
    ::shutdown(m_fd.get(), SHUT_RDWR);
    m_broken.store(true);
  }
  return std::unexpected(m_brokenError);
}

std::unexpected<Error> TcpChannelImpl::brokenError() {
  std::lock_guard lock(m_brokenMutex);
  return std::unexpected(m_brokenError);
}

Result<void> TcpChannelImpl::send(BuildMessage build, std::span<const std::byte> payload) {
  if (m_broken.load()) return brokenError();
  if (payload.size() > m_config.maxPayloadBytes) {
    return fail(Errc::kTooLarge, fmt::format("payload of {} bytes exceeds the {}-byte limit",
                                             payload.size(), m_config.maxPayloadBytes));
  }
  capnp::MallocMessageBuilder builder;
  build(builder);
  const auto segments = builder.getSegmentsForOutput();
  if (segments.size() > tcp::kMaxSegments) {
    return fail(Errc::kTooLarge, fmt::format("message has {} segments (at most {})",
                                             segments.size(), tcp::kMaxSegments));
  }
  std::vector<std::uint32_t> table;
  const std::uint64_t messageBytes = tcp::encodeSegmentTable(segments, table);
  if (messageBytes > m_config.maxMessageBytes) {
    return fail(Errc::kTooLarge, fmt::format("message of {} bytes exceeds the {}-byte limit",
                                             messageBytes, m_config.maxMessageBytes));
  }
  const FrameHeader header{tcp::kFrameMagic, tcp::kFrameVersion, 0, messageBytes, payload.size()};
  std::vector<iovec> iov;
  iov.reserve(segments.size() + 3);
  iov.push_back({const_cast<FrameHeader*>(&header), sizeof header});
  iov.push_back({table.data(), table.size() * sizeof(std::uint32_t)});
  for (auto segment : segments) {
    iov.push_back({const_cast<capnp::word*>(segment.begin()), segment.size() * sizeof(capnp::word)});
  }
  if (!payload.empty()) iov.push_back({const_cast<std::byte*>(payload.data()), payload.size()});
  return writeAll(iov);
}

Result<void> TcpChannelImpl::writeAll(std::vector<iovec>& iov) {
  std::size_t first = 0;
  std::size_t sentTotal = 0;
  while (first < iov.size()) {
    msghdr msg{};
    msg.msg_iov = &iov[first];
    msg.msg_iovlen = std::min<std::size_t>(iov.size() - first, IOV_MAX);
    // Blocking with SO_SNDTIMEO = peerTimeout: each call returns after at most that long without
    // progress (EAGAIN), or with a partial count.
    auto sent = sys("sendmsg", [&] { return ::sendmsg(m_fd.get(), &msg, MSG_NOSIGNAL); });
    if (!sent) {
      const int err = sent.error().sysErrno;
      if (m_broken.load()) return brokenError();
      if (err == EAGAIN || err == EWOULDBLOCK) {
        if (sentTotal == 0) {
          return fail(Errc::kTimeout, fmt::format("{}: peer accepted no data for {} ms",
                                                  m_description, m_config.peerTimeout.count()));
        }
        return breakWith(Errc::kDisconnected,
                         fmt::format("send stalled mid-frame for {} ms after {} bytes",
                                     m_config.peerTimeout.count(), sentTotal));
      }
      if (isDisconnect(err)) {
        return breakWith(Errc::kDisconnected, fmt::format("peer is gone ({})", std::strerror(err)), err);
      }
      return breakWith(Errc::kSystem, sent.error().message, err);
    }
    auto left = static_cast<std::size_t>(*sent);
    sentTotal += left;
    while (first < iov.size() && left >= iov[first].iov_len) {
      left -= iov[first].iov_len;
      ++first;
    }
    if (left > 0) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return {};
}

Result<void> TcpChannelImpl::waitReadable(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    pollfd pfd{m_fd.get(), POLLIN, 0};
    auto ready = sys("poll", [&] { return ::poll(&pfd, 1, pollMs(remaining(deadline))); });
    if (!ready) return breakWith(Errc::kSystem, ready.error().message, ready.error().sysErrno);
    if (*ready > 0) return {};
    if (Clock::now() >= deadline) {
      return fail(Errc::kTimeout, fmt::format("no message from {} within {} ms", m_description,
                                              timeout.count()));
    }
  }
}

Result<std::size_t> TcpChannelImpl::recvSome(std::byte* dst, std::size_t size, int flags,
                                             const char* what) {
  auto got = sys("recv", [&] { return ::recv(m_fd.get(), dst, size, flags); });
  if (!got) {
    const int err = got.error().sysErrno;
    if (m_broken.load()) return brokenError();
    if (err == EAGAIN || err == EWOULDBLOCK) {
      return breakWith(Errc::kDisconnected, fmt::format("peer stalled for {} ms in the middle of {}",
                                                        m_config.peerTimeout.count(),
                                                        what != nullptr ? what : "a frame"));
    }
    if (isDisconnect(err)) {
      return breakWith(Errc::kDisconnected,
                       fmt::format("peer is gone ({}) while reading {}", std::strerror(err),
                                   what != nullptr ? what : "a frame header"),
                       err);
    }
    return breakWith(Errc::kSystem, got.error().message, err);
  }
  if (*got == 0) {
    if (m_broken.load()) return brokenError();
    if (what == nullptr) return breakWith(Errc::kDisconnected, "peer closed the connection");
    return breakWith(Errc::kDisconnected, fmt::format("peer closed the connection while {} was "
                                                      "expected (truncated frame)", what));
  }
  return static_cast<std::size_t>(*got);
}

Result<void> TcpChannelImpl::readExact(std::byte* dst, std::size_t size, const char* what) {
  while (size > 0) {
    if (m_readBegin < m_readEnd) {
      const auto n = std::min(size, m_readEnd - m_readBegin);
      std::memcpy(dst, m_readBuffer.get() + m_readBegin, n);
      m_readBegin += n;
      dst += n;
      size -= n;
      continue;
    }
    if (size >= kReadBufferBytes) {
      // Large reads go straight to the destination; MSG_WAITALL lets the kernel fill it in one call
      // (SO_RCVTIMEO bounds each call; a partial count is progress and we continue).
      auto got = recvSome(dst, size, MSG_WAITALL, what);
      if (!got) return std::unexpected(got.error());
      dst += *got;
      size -= *got;
      continue;
    }
    auto got = recvSome(m_readBuffer.get(), kReadBufferBytes, 0, what);
    if (!got) return std::unexpected(got.error());
    m_readBegin = 0;
    m_readEnd = *got;
  }
  return {};
}

Result<std::span<std::byte>> TcpChannelImpl::payloadDestination(TcpBody& body, std::size_t size) {
  if (!m_sink) {
    auto buffer = m_pool->take(size);
    std::span<std::byte> dest(buffer.bytes.get(), size);
    body.ownPayload(std::move(buffer), m_pool);
    return dest;
  }
  Result<std::span<std::byte>> dest = fail(Errc::kMalformed, "");
  kj::Maybe<kj::Exception> problem =
      kj::runCatchingExceptions([&] { dest = m_sink(body.reader(), size); });
  KJ_IF_MAYBE (e, problem) {
    return fail(Errc::kMalformed, fmt::format("{}: payload sink failed on the message: {}",
                                              m_description, e->getDescription().cStr()));
  }
  if (dest && dest->size() < size) {
    return fail(Errc::kInvalidArgument,
                fmt::format("{}: payload sink returned {} bytes for a {}-byte payload",
                            m_description, dest->size(), size));
  }
  return dest;
}

Result<void> TcpChannelImpl::discard(std::size_t size) {
  std::vector<std::byte> scratch(std::min<std::size_t>(size, 1 << 20));
  while (size > 0) {
    const auto n = std::min(size, scratch.size());
    if (auto ok = readExact(scratch.data(), n, "a discarded payload"); !ok) return ok;
    size -= n;
  }
  return {};
}

Result<Incoming> TcpChannelImpl::receive(std::chrono::milliseconds timeout) {
  if (m_broken.load()) return brokenError();
  if (m_readBegin == m_readEnd) {
    if (auto ready = waitReadable(timeout); !ready) return std::unexpected(ready.error());
    // Between frames: an EOF here is a clean close, not a truncated frame.
    auto got = recvSome(m_readBuffer.get(), kReadBufferBytes, MSG_DONTWAIT, nullptr);
    if (!got) return std::unexpected(got.error());
    m_readBegin = 0;
    m_readEnd = *got;
  }
  FrameHeader header{};
  if (auto ok = readExact(reinterpret_cast<std::byte*>(&header), sizeof header, "a frame header"); !ok) {
    return std::unexpected(ok.error());
  }
  if (auto ok = tcp::checkHeader(header, m_config); !ok) {
    return breakWith(Errc::kMalformed, ok.error().message);
  }
  auto words = kj::heapArray<capnp::word>(header.messageBytes / sizeof(capnp::word));
  if (auto ok = readExact(reinterpret_cast<std::byte*>(words.begin()), header.messageBytes, "a message");
      !ok) {
    return std::unexpected(ok.error());
  }
  auto segments = tcp::splitSegments(words.asPtr().asConst());
  if (!segments) return breakWith(Errc::kMalformed, segments.error().message);
  if (auto ok = tcp::checkDecodes(segments->asPtr()); !ok) {
    return breakWith(Errc::kMalformed, ok.error().message);
  }
  auto body = std::make_unique<TcpBody>(kj::mv(words), kj::mv(*segments));
  if (header.payloadBytes > 0) {
    const auto size = static_cast<std::size_t>(header.payloadBytes);
    auto dest = payloadDestination(*body, size);
    if (!dest) {
      if (auto drained = discard(size); !drained) return std::unexpected(drained.error());
      return std::unexpected(dest.error());
    }
    if (auto ok = readExact(dest->data(), size, "a payload"); !ok) return std::unexpected(ok.error());
    body->setPayload({dest->data(), size});
  }
  return Incoming(std::move(body));
}

class TcpListener final : public Listener {
 public:
  TcpListener(Fd fd, const TransportConfig& config, std::string endpoint)
      : m_fd(std::move(fd)), m_config(config), m_endpoint(std::move(endpoint)) {}

  Result<std::unique_ptr<Channel>> accept(std::chrono::milliseconds timeout) override;
  std::string endpoint() const override { return m_endpoint; }

 private:
  Fd m_fd;
  TransportConfig m_config;
  std::string m_endpoint;
};

Result<std::unique_ptr<Channel>> TcpListener::accept(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    pollfd pfd{m_fd.get(), POLLIN, 0};
    auto ready = sys("poll", [&] { return ::poll(&pfd, 1, pollMs(remaining(deadline))); });
    if (!ready) return std::unexpected(ready.error());
    if (*ready == 0) {
      if (Clock::now() < deadline) continue;
      return fail(Errc::kTimeout, fmt::format("no peer connected to {} within {} ms", m_endpoint,
                                              timeout.count()));
    }
    auto fd = sys("accept", [&] { return ::accept4(m_fd.get(), nullptr, nullptr, SOCK_CLOEXEC); });
    if (!fd) {
      const int err = fd.error().sysErrno;
      // The peer may have gone between poll and accept; keep waiting for the next one.
      if (err == EAGAIN || err == EWOULDBLOCK || err == ECONNABORTED || err == EPROTO) continue;
      return std::unexpected(fd.error());
    }
    Fd conn(*fd);
    if (auto ok = configureConnected(conn.get(), m_config); !ok) return std::unexpected(ok.error());
    auto description = fmt::format("tcp://{} <- {}", localAddress(conn.get()), peerAddress(conn.get()));
    tcp::log().debug("accepted {}", description);
    return std::make_unique<TcpChannelImpl>(std::move(conn), m_config, std::move(description));
  }
}

}  // namespace

Result<std::unique_ptr<Listener>> listenTcp(const Endpoint& ep, const TransportConfig& config) {
  auto list = resolve(ep, true);
  if (!list) return std::unexpected(list.error());
  Error last{Errc::kSystem, "no address"};
  for (const addrinfo* ai = list->get(); ai != nullptr; ai = ai->ai_next) {
    auto fd = sys("socket", [&] {
      return ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    });
    if (!fd) {
      last = fd.error();
      continue;
    }
    Fd sock(*fd);
    Result<int> rc = sys("setsockopt(SO_REUSEADDR)", [&] {
      const int one = 1;
      return ::setsockopt(sock.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    });
    if (rc) rc = sys("bind", [&] { return ::bind(sock.get(), ai->ai_addr, ai->ai_addrlen); });
    if (rc) rc = sys("listen", [&] { return ::listen(sock.get(), SOMAXCONN); });
    if (!rc) {
      last = rc.error();
      continue;
    }
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    ::getsockname(sock.get(), reinterpret_cast<sockaddr*>(&addr), &len);
    const auto port = ntohs(addr.ss_family == AF_INET6
                                ? reinterpret_cast<const sockaddr_in6&>(addr).sin6_port
                                : reinterpret_cast<const sockaddr_in&>(addr).sin_port);
    auto endpoint = Endpoint{Endpoint::Kind::kTcp, ep.host, port, {}}.toString();
    tcp::log().debug("listening on {} ({})", endpoint, addressText(addr, len));
    return std::make_unique<TcpListener>(std::move(sock), config, std::move(endpoint));
  }
  return fail(last.code, fmt::format("cannot listen on {}: {}", ep.toString(), last.message),
              last.sysErrno);
}

Result<std::unique_ptr<Channel>> connectTcp(const Endpoint& ep, const TransportConfig& config) {
  const auto deadline = Clock::now() + config.connectTimeout;
  auto list = resolve(ep, false);
  if (!list) return std::unexpected(list.error());
  Error last{Errc::kDisconnected, "no address"};
  for (const addrinfo* ai = list->get(); ai != nullptr; ai = ai->ai_next) {
    auto sock = connectOne(*ai, deadline);
    if (!sock) {
      last = sock.error();
      if (last.code == Errc::kTimeout) break;
      continue;
    }
    if (auto ok = configureConnected(sock->get(), config); !ok) return std::unexpected(ok.error());
    auto description = fmt::format("tcp://{} <- {}", peerAddress(sock->get()), localAddress(sock->get()));
    tcp::log().debug("connected {}", description);
    return std::make_unique<TcpChannelImpl>(std::move(*sock), config, std::move(description));
  }
  if (last.code == Errc::kTimeout) {
    return fail(Errc::kTimeout, fmt::format("connect to {}: no answer within {} ms", ep.toString(),
                                            config.connectTimeout.count()));
  }
  const Errc code = (last.sysErrno == ECONNREFUSED || isDisconnect(last.sysErrno))
                        ? Errc::kDisconnected
                        : last.code;
  return fail(code, fmt::format("connect to {}: {}{}", ep.toString(), last.message,
                                last.sysErrno == ECONNREFUSED ? " (nobody listens there)" : ""),
              last.sysErrno);
}

}  // namespace flyt::transport