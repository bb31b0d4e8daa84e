// ShmChannel: Channel over iceoryx 2.0 shared memory.
//
// Why publish/subscribe and not iceoryx's request/response (popo::Client/Server): a Flyt session is
// not request/response. The client streams asynchronous batches that get no answer, and the server
// answers only some of them; iceoryx 2.0's server can only send a response tied to a received
// request, and one Server port shares one request queue among all its clients, so a flooding or
// broken client would delay every other session. Two publish/subscribe services per session (one per
// direction, each with exactly one publisher and one subscriber) give every session its own queues.
//
// Set-up and liveness use an abstract-namespace SOCK_SEQPACKET unix socket "\0flyt-shm/<name>"
// (no file in the file system; bind() refuses a second listener of the same name):
//   client -> server  ConnectRequest{magic, version, sessionId, pid} + a memfd (SCM_RIGHTS) holding
//                     the ControlBlock;
//   server -> client  ConnectReply{magic, status} once both services are connected.
// After that the socket carries nothing; it stays open for liveness only. The kernel closes it when a
// process dies, however it dies, so a dead peer is seen at once (poll() reports hang-up), from any
// thread. (A robust mutex would also see SIGKILL, but its ownership belongs to the *thread* that
// locked it; CUDA applications create and end threads freely, which would fake a dead peer.)
// Because the control block is a memfd, not a /dev/shm name, nothing is left behind by a SIGKILL.
//
// Flow control: iceoryx 2.0's blocking publish (WAIT_FOR_CONSUMER) waits without any bound, so the
// queues are never allowed to fill: the ControlBlock counts, per direction, the messages the
// receiver has taken; a sender keeps at most kWindow messages in flight (below the queue capacity)
// and otherwise waits, up to peerTimeout, watching the peer's liveness. Nothing is ever dropped.
//
// Chunk format (one message per iceoryx chunk, all little-endian, offsets in bytes from the start of
// the chunk's user payload):
//   FrameHeader (136 bytes = 17 words): magic "FLYT", version 1, segmentCount (1..15),
//     payloadOffset, payloadSize, segments[15] {offsetWords, sizeWords};
//   the Cap'n Proto segments, each 8-byte aligned, where the header says;
//   the inline payload, 8-byte aligned, after the segments.
// The sender builds the message in place: ChunkBuilder hands capnp segments carved out of the chunk,
// so nothing is copied. Only a message that outgrows its chunk is copied once into a larger chunk.
// The receiver validates the header against the chunk size, then reads the segments in place with
// SegmentArrayMessageReader after one full traversal (AnyPointer::targetSize) that makes any
// malformed pointer throw inside receive(), where it becomes Errc::kMalformed.
#include "flyt/transport/shm_channel.hpp"

#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include <capnp/any.h>
#include <capnp/message.h>
#include <fmt/format.h>
#include <kj/exception.h>

#include "iceoryx_posh/mepoo/chunk_header.hpp"
#include "iceoryx_posh/popo/untyped_publisher.hpp"
#include "iceoryx_posh/popo/untyped_subscriber.hpp"
#include "iceoryx_posh/popo/wait_set.hpp"

#include "flyt/transport/handshake.hpp"
#include "flyt/transport/sys.hpp"
#include "shm_runtime.hpp"

namespace flyt::transport {
namespace {

using Clock = std::chrono::steady_clock;
using capnp::word;

constexpr std::uint32_t kMagic = 0x54594c46;  // "FLYT"
constexpr std::uint32_t kVersion = 1;
constexpr std::uint32_t kMaxSegments = 15;
constexpr std::uint64_t kWindow = 128;         // messages in flight per direction
constexpr std::uint64_t kQueueCapacity = 256;  // iceoryx's maximum; never reached (kWindow)
constexpr std::size_t kFirstSegmentWords = 1024;
constexpr std::size_t kMinMessageBytes = 512;
constexpr auto kSpin = std::chrono::microseconds(50);
constexpr auto kLivenessSlice = std::chrono::milliseconds(5);

struct SegmentRef {
  std::uint32_t offsetWords;
  std::uint32_t sizeWords;
};
struct FrameHeader {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t segmentCount;
  std::uint32_t payloadOffset;
  std::uint32_t payloadSize;
  SegmentRef segments[kMaxSegments];
};
static_assert(sizeof(FrameHeader) == 136 && alignof(FrameHeader) == 4);
constexpr std::size_t kHeaderWords = (sizeof(FrameHeader) + 7) / 8;

// Shared by both ends through a memfd. consumed[d]: messages taken by the receiver of direction d.
struct ControlBlock {
  std::uint64_t magic;
  std::atomic<std::uint64_t> consumed[2];
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(sizeof(ControlBlock) == 24 && alignof(ControlBlock) == 8);
constexpr std::size_t kControlBytes = 4096;
constexpr int kClientToServer = 0;
constexpr int kServerToClient = 1;

struct ConnectRequest {
  std::uint32_t magic;
  std::uint32_t version;
  std::uint64_t sessionId;
  std::uint32_t pid;
  std::uint32_t reserved;
};
struct ConnectReply {
  std::uint32_t magic;
  std::uint32_t status;  // 0: ready
};
static_assert(sizeof(ConnectRequest) == 24 && sizeof(ConnectReply) == 8);

class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : m_fd(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : m_fd(std::exchange(other.m_fd, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    std::swap(m_fd, other.m_fd);
    return *this;
  }
  ~UniqueFd() {
    if (m_fd >= 0) ::close(m_fd);
  }
  [[nodiscard]] int get() const { return m_fd; }

 private:
  int m_fd;
};

struct ControlMapping {
  ControlMapping() = default;
  explicit ControlMapping(void* addr) : block(static_cast<ControlBlock*>(addr)) {}
  ControlMapping(ControlMapping&& other) noexcept : block(std::exchange(other.block, nullptr)) {}
  ~ControlMapping() {
    if (block) ::munmap(block, kControlBytes);
  }
  ControlBlock* block = nullptr;
};

sockaddr_un listenAddress(const std::string& name, socklen_t& length) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const auto path = "flyt-shm/" + name;  // abstract: sun_path[0] stays '\0'
  std::memcpy(addr.sun_path + 1, path.data(), path.size());
  length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + path.size());
  return addr;
}

iox::capro::ServiceDescription service(const std::string& name, const char* direction,
                                       std::uint64_t sessionId) {
  const auto event = fmt::format("{}.{:016x}", direction, sessionId);
  return {iox::capro::IdString_t(iox::cxx::TruncateToCapacity, "flyt"),
          iox::capro::IdString_t(iox::cxx::TruncateToCapacity, name.c_str()),
          iox::capro::IdString_t(iox::cxx::TruncateToCapacity, event.c_str())};
}

iox::popo::PublisherOptions publisherOptions() {
  iox::popo::PublisherOptions options;
  options.subscriberTooSlowPolicy = iox::popo::ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER;
  return options;
}
iox::popo::SubscriberOptions subscriberOptions() {
  iox::popo::SubscriberOptions options;
  options.queueCapacity = kQueueCapacity;
  options.queueFullPolicy = iox::popo::QueueFullPolicy::BLOCK_PRODUCER;
  return options;
}

// One session's iceoryx ports. Shared with every Incoming body, which releases its chunk here.
struct Ports {
  Ports(const iox::capro::ServiceDescription& out, const iox::capro::ServiceDescription& in)
      : publisher(out, publisherOptions()), subscriber(in, subscriberOptions()) {}
  [[nodiscard]] bool connected() const {
    return publisher.hasSubscribers() &&
           subscriber.getSubscriptionState() == iox::SubscribeState::SUBSCRIBED;
  }
  iox::popo::UntypedPublisher publisher;
  iox::popo::UntypedSubscriber subscriber;
  iox::popo::WaitSet<1> waitSet;  // declared last: detaches before the subscriber goes
  std::mutex subscriberMutex;     // take() on the receiving thread vs release() from any thread
};

// A MessageBuilder whose segments are carved, zeroed, out of an iceoryx chunk; heap segments only
// when the chunk is full (then overflowed() and the sender copies into a larger chunk).
class ChunkBuilder final : public capnp::MessageBuilder {
 public:
  ChunkBuilder(word* area, std::size_t words) : m_area(area), m_words(words) {}
  kj::ArrayPtr<word> allocateSegment(capnp::uint minimumSize) override {
    const std::size_t remaining = m_words - m_used;
    std::size_t size = std::max<std::size_t>(minimumSize, m_used == 0 ? kFirstSegmentWords : m_used);
    if (size > remaining && minimumSize <= remaining) size = remaining;
    if (size <= remaining && m_segments < kMaxSegments) {
      word* start = m_area + m_used;
      std::memset(start, 0, size * sizeof(word));
      m_used += size;
      ++m_segments;
      return {start, size};
    }
    m_overflowed = true;
    m_heap.push_back(kj::heapArray<word>(size));
    std::memset(m_heap.back().begin(), 0, size * sizeof(word));
    return m_heap.back();
  }
  [[nodiscard]] bool overflowed() const { return m_overflowed; }
  [[nodiscard]] std::size_t allocatedWords() const { return m_used; }
  [[nodiscard]] const word* area() const { return m_area; }

 private:
  word* m_area;
  std::size_t m_words;
  std::size_t m_used = 0;
  std::uint32_t m_segments = 0;
  bool m_overflowed = false;
  std::vector<kj::Array<word>> m_heap;
};

class ShmBody final : public Incoming::Body {
 public:
  ShmBody(std::shared_ptr<Ports> ports, const void* chunk) : m_ports(std::move(ports)), m_chunk(chunk) {}
  ~ShmBody() override {
    m_reader.reset();
    std::lock_guard lock(m_ports->subscriberMutex);
    m_ports->subscriber.release(m_chunk);
  }
  ShmBody(const ShmBody&) = delete;
  ShmBody& operator=(const ShmBody&) = delete;

  // Validates the frame in the chunk; kMalformed says what is wrong.
  Result<void> parse(std::uint32_t chunkBytes) {
    const auto* bytes = static_cast<const std::byte*>(m_chunk);
    if (chunkBytes < kHeaderWords * sizeof(word)) {
      return fail(Errc::kMalformed, fmt::format("shm chunk of {} bytes is smaller than a frame header", chunkBytes));
    }
    FrameHeader header;
    std::memcpy(&header, bytes, sizeof(header));
    if (header.magic != kMagic || header.version != kVersion || header.segmentCount == 0 ||
        header.segmentCount > kMaxSegments) {
      return fail(Errc::kMalformed,
                  fmt::format("shm frame header is invalid (magic {:#x}, version {}, {} segments)",
                              header.magic, header.version, header.segmentCount));
    }
    const std::uint64_t chunkWords = chunkBytes / sizeof(word);
    std::uint64_t totalWords = 0;
    for (unsigned i = 0; i < header.segmentCount; ++i) {
      const auto& ref = header.segments[i];
      if (ref.offsetWords < kHeaderWords || ref.sizeWords == 0 ||
          std::uint64_t{ref.offsetWords} + ref.sizeWords > chunkWords) {
        return fail(Errc::kMalformed, fmt::format("shm segment {} (word {} + {}) lies outside the {}-byte chunk",
                                                  i, ref.offsetWords, ref.sizeWords, chunkBytes));
      }
      m_segments[i] = {reinterpret_cast<const word*>(bytes) + ref.offsetWords, ref.sizeWords};
      totalWords += ref.sizeWords;
    }
    if (std::uint64_t{header.payloadOffset} + header.payloadSize > chunkBytes) {
      return fail(Errc::kMalformed, fmt::format("shm payload ({} + {} bytes) lies outside the {}-byte chunk",
                                                header.payloadOffset, header.payloadSize, chunkBytes));
    }
    m_payload = {bytes + header.payloadOffset, header.payloadSize};
    capnp::ReaderOptions options;
    options.traversalLimitInWords = 4 * totalWords + 1024;  // the check below and the caller's reads
    try {
      m_reader = std::make_unique<capnp::SegmentArrayMessageReader>(
          kj::arrayPtr(m_segments.data(), header.segmentCount), options);
      (void)m_reader->getRoot<capnp::AnyPointer>().targetSize();
    } catch (const kj::Exception& e) {
      return fail(Errc::kMalformed, fmt::format("shm message failed validation: {}", e.getDescription().cStr()));
    }
    return {};
  }

  capnp::MessageReader& reader() override { return *m_reader; }
  std::span<const std::byte> payload() const override { return m_payload; }

 private:
  std::shared_ptr<Ports> m_ports;
  const void* m_chunk;
  std::array<kj::ArrayPtr<const word>, kMaxSegments> m_segments{};
  std::span<const std::byte> m_payload;
  std::unique_ptr<capnp::SegmentArrayMessageReader> m_reader;  // noexcept(false) destructor
};

std::size_t roundUp8(std::size_t n) { return (n + 7) & ~std::size_t{7}; }

class ShmChannel final : public Channel {
 public:
  ShmChannel(std::string name, std::uint64_t sessionId, int side, UniqueFd socket,
             ControlMapping control, std::shared_ptr<Ports> ports, const TransportConfig& config)
      : m_name(std::move(name)), m_sessionId(sessionId), m_sendDir(side), m_recvDir(1 - side),
        m_socket(std::move(socket)), m_control(std::move(control)), m_ports(std::move(ports)),
        m_config(config), m_classes(shmChunkClasses(config)) {}

  Result<void> send(BuildMessage build, std::span<const std::byte> payload) override;
  Result<Incoming> receive(std::chrono::milliseconds timeout) override;
  std::size_t maxPayloadBytes() const override { return m_config.shmInlinePayloadBytes; }
  std::string describe() const override { return fmt::format("shm://{}#{:016x}", m_name, m_sessionId); }

 private:
  std::unexpected<Error> broken(Errc code, std::string message) {
    m_broken = Error{code, std::move(message)};
    return std::unexpected(*m_broken);
  }
  [[nodiscard]] bool peerGone() const {
    pollfd p{m_socket.get(), POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLIN)) != 0;  // no data after set-up
  }
  Result<void> waitForCredit();
  Result<void*> loan(std::size_t bytes);
  std::optional<Result<Incoming>> tryTake();

  std::string m_name;
  std::uint64_t m_sessionId;
  int m_sendDir;
  int m_recvDir;
  UniqueFd m_socket;
  ControlMapping m_control;
  std::shared_ptr<Ports> m_ports;
  TransportConfig m_config;
  std::vector<ShmChunkClass> m_classes;
  std::uint64_t m_sent = 0;
  std::optional<Error> m_broken;
};

Result<void> ShmChannel::waitForCredit() {
  auto& consumed = m_control.block->consumed[m_sendDir];
  if (m_sent - consumed.load(std::memory_order_acquire) < kWindow) return {};
  const auto start = Clock::now();
  for (auto backoff = std::chrono::microseconds(0);;) {
    if (m_sent - consumed.load(std::memory_order_acquire) < kWindow) return {};
    if (peerGone()) return broken(Errc::kDisconnected, fmt::format("{}: peer is gone", describe()));
    if (Clock::now() - start > m_config.peerTimeout) {
      return fail(Errc::kTimeout, fmt::format("{}: peer did not drain its queue ({} messages) within {} ms",
                                              describe(), kWindow, m_config.peerTimeout.count()));
    }
    if (Clock::now() - start > kSpin) {
      backoff = std::min(backoff + std::chrono::microseconds(10), std::chrono::microseconds(500));
      std::this_thread::sleep_for(backoff);
    }
  }
}

Result<void*> ShmChannel::loan(std::size_t bytes) {
  const auto start = Clock::now();
  for (;;) {
    auto chunk = m_ports->publisher.loan(static_cast<std::uint32_t>(bytes), alignof(word));
    if (!chunk.has_error()) return chunk.value();
    const auto error = chunk.get_error();
    if (error != iox::popo::AllocationError::RUNNING_OUT_OF_CHUNKS &&
        error != iox::popo::AllocationError::TOO_MANY_CHUNKS_ALLOCATED_IN_PARALLEL) {
      return fail(Errc::kUnavailable, fmt::format("{}: RouDi has no shm chunk of {} bytes (allocation error {})",
                                                  describe(), bytes, static_cast<int>(error)));
    }
    if (peerGone()) return broken(Errc::kDisconnected, fmt::format("{}: peer is gone", describe()));
    if (Clock::now() - start > m_config.peerTimeout) {
      return fail(Errc::kTimeout, fmt::format("{}: no free shm chunk of {} bytes within {} ms", describe(),
                                              bytes, m_config.peerTimeout.count()));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

Result<void> ShmChannel::send(BuildMessage build, std::span<const std::byte> payload) {
  if (m_broken) return std::unexpected(*m_broken);
  if (payload.size() > maxPayloadBytes()) {
    return fail(Errc::kTooLarge, fmt::format("payload of {} bytes exceeds the {}-byte shm inline limit; "
                                             "use the data region", payload.size(), maxPayloadBytes()));
  }
  if (peerGone()) return broken(Errc::kDisconnected, fmt::format("{}: peer is gone", describe()));
  if (auto credit = waitForCredit(); !credit) return credit;

  const std::size_t payloadBytes = roundUp8(payload.size());
  const auto fits = [&](std::size_t bytes) -> std::optional<std::uint32_t> {
    for (const auto& c : m_classes) {
      if (c.bytes >= bytes) return c.bytes;
    }
    return std::nullopt;
  };
  const auto first = fits(kHeaderWords * sizeof(word) + payloadBytes + kMinMessageBytes);
  if (!first) return fail(Errc::kTooLarge, fmt::format("payload of {} bytes fits no shm chunk", payload.size()));
  auto chunk = loan(*first);
  if (!chunk) return std::unexpected(chunk.error());
  void* out = *chunk;
  auto* words = static_cast<word*>(out);

  ChunkBuilder builder(words + kHeaderWords, *first / sizeof(word) - kHeaderWords - payloadBytes / sizeof(word));
  kj::ArrayPtr<const kj::ArrayPtr<const word>> segments;
  try {
    build(builder);
    segments = builder.getSegmentsForOutput();
  } catch (const kj::Exception& e) {
    m_ports->publisher.release(out);
    return fail(Errc::kInvalidArgument, fmt::format("building the message failed: {}", e.getDescription().cStr()));
  }
  std::size_t messageWords = 0;
  for (auto segment : segments) messageWords += segment.size();
  if (messageWords * sizeof(word) > m_config.maxMessageBytes) {
    m_ports->publisher.release(out);
    return fail(Errc::kTooLarge, fmt::format("message of {} bytes exceeds the {}-byte limit",
                                             messageWords * sizeof(word), m_config.maxMessageBytes));
  }
  FrameHeader header{kMagic, kVersion, static_cast<std::uint16_t>(segments.size()), 0,
                     static_cast<std::uint32_t>(payload.size()), {}};
  std::size_t payloadOffset = 0;
  if (!builder.overflowed()) {
    for (std::size_t i = 0; i < segments.size(); ++i) {
      header.segments[i] = {static_cast<std::uint32_t>(segments[i].begin() - words),
                            static_cast<std::uint32_t>(segments[i].size())};
    }
    payloadOffset = (kHeaderWords + builder.allocatedWords()) * sizeof(word);
  } else {
    // The message outgrew its chunk: copy it, as one segment, into a chunk that fits.
    const std::size_t needed = (kHeaderWords + messageWords) * sizeof(word) + payloadBytes;
    const auto bigger = fits(needed);
    if (!bigger) {
      m_ports->publisher.release(out);
      return fail(Errc::kTooLarge, fmt::format("message of {} bytes plus {} payload bytes fits no shm chunk "
                                               "(largest {}); use the data region",
                                               messageWords * sizeof(word), payload.size(), m_classes.back().bytes));
    }
    auto big = loan(*bigger);
    if (!big) {
      m_ports->publisher.release(out);
      return std::unexpected(big.error());
    }
    // Far pointers name segments by index, so the segments keep their identity; a message of more
    // segments than the header holds is first flattened into one.
    std::optional<capnp::MallocMessageBuilder> flat;
    if (segments.size() > kMaxSegments) {
      flat.emplace(static_cast<capnp::uint>(messageWords + 16), capnp::AllocationStrategy::FIXED_SIZE);
      flat->setRoot(builder.getRoot<capnp::AnyPointer>().asReader());
      segments = flat->getSegmentsForOutput();
    }
    auto* dst = static_cast<word*>(*big) + kHeaderWords;
    header.segmentCount = static_cast<std::uint16_t>(segments.size());
    for (std::size_t i = 0; i < segments.size(); ++i) {
      std::memcpy(dst, segments[i].begin(), segments[i].size() * sizeof(word));
      header.segments[i] = {static_cast<std::uint32_t>(dst - static_cast<word*>(*big)),
                            static_cast<std::uint32_t>(segments[i].size())};
      dst += segments[i].size();
    }
    m_ports->publisher.release(out);
    out = *big;
    payloadOffset = static_cast<std::size_t>(dst - static_cast<word*>(out)) * sizeof(word);
  }
  header.payloadOffset = static_cast<std::uint32_t>(payloadOffset);
  if (!payload.empty()) std::memcpy(reinterpret_cast<std::byte*>(out) + payloadOffset, payload.data(), payload.size());
  std::memcpy(out, &header, sizeof(header));
  m_ports->publisher.publish(out);
  ++m_sent;
  return {};
}

std::optional<Result<Incoming>> ShmChannel::tryTake() {
  const void* chunk = nullptr;
  {
    std::lock_guard lock(m_ports->subscriberMutex);
    auto taken = m_ports->subscriber.take();
    if (taken.has_error()) {
      if (taken.get_error() == iox::popo::ChunkReceiveResult::NO_CHUNK_AVAILABLE) return std::nullopt;
      return fail(Errc::kUnavailable, fmt::format("{}: more than {} received messages are still held",
                                                  describe(), iox::MAX_CHUNKS_HELD_PER_SUBSCRIBER_SIMULTANEOUSLY));
    }
    chunk = taken.value();
  }
  m_control.block->consumed[m_recvDir].fetch_add(1, std::memory_order_release);
  auto body = std::make_unique<ShmBody>(m_ports, chunk);
  if (auto ok = body->parse(iox::mepoo::ChunkHeader::fromUserPayload(chunk)->userPayloadSize()); !ok) {
    shm::log().warn("{}: {}", describe(), ok.error().message);
    return broken(ok.error().code, fmt::format("{}: {}", describe(), ok.error().message));
  }
  return Incoming(std::move(body));
}

Result<Incoming> ShmChannel::receive(std::chrono::milliseconds timeout) {
  if (m_broken) return std::unexpected(*m_broken);
  const auto start = Clock::now();
  const auto deadline = start + timeout;
  do {
    if (auto got = tryTake()) return std::move(*got);
  } while (Clock::now() - start < kSpin);
  for (;;) {
    if (peerGone()) {
      if (auto got = tryTake()) return std::move(*got);  // sent just before it went
      return broken(Errc::kDisconnected, fmt::format("{}: peer is gone", describe()));
    }
    const auto now = Clock::now();
    if (now >= deadline) {
      return fail(Errc::kTimeout, fmt::format("{}: no message within {} ms", describe(), timeout.count()));
    }
    const auto slice = std::min<Clock::duration>(deadline - now, kLivenessSlice);
    (void)m_ports->waitSet.timedWait(iox::units::Duration::fromNanoseconds(
        std::chrono::duration_cast<std::chrono::nanoseconds>(slice).count()));
    if (auto got = tryTake()) return std::move(*got);
  }
}

// Creates the session's ports and waits (until `deadline`) for both directions to connect.
Result<std::shared_ptr<Ports>> openPorts(const std::string& name, std::uint64_t sessionId, int side) {
  const char* out = side == kClientToServer ? "c2s" : "s2c";
  const char* in = side == kClientToServer ? "s2c" : "c2s";
  auto ports = std::make_shared<Ports>(service(name, out, sessionId), service(name, in, sessionId));
  if (ports->waitSet.attachState(ports->subscriber, iox::popo::SubscriberState::HAS_DATA).has_error()) {
    return fail(Errc::kUnavailable, "cannot attach the shm subscriber to a WaitSet");
  }
  return ports;
}

Result<void> waitConnected(const Ports& ports, Clock::time_point deadline, const std::string& what) {
  while (!ports.connected()) {
    if (Clock::now() >= deadline) {
      return fail(Errc::kTimeout, fmt::format("{}: iceoryx services did not connect in time", what));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return {};
}

Result<void> waitReadable(int fd, Clock::time_point deadline, const std::string& what) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return fail(Errc::kTimeout, what);
    pollfd p{fd, POLLIN, 0};
    auto rc = sys("poll", [&] { return ::poll(&p, 1, static_cast<int>(left.count()) + 1); });
    if (!rc) return std::unexpected(rc.error());
    if (*rc > 0) return {};
  }
}

class ShmListener final : public Listener {
 public:
  ShmListener(std::string name, UniqueFd socket, const TransportConfig& config)
      : m_name(std::move(name)), m_socket(std::move(socket)), m_config(config) {}

  Result<std::unique_ptr<Channel>> accept(std::chrono::milliseconds timeout) override {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      if (auto ready = waitReadable(m_socket.get(), deadline,
                                    fmt::format("no shm client on shm://{} within {} ms", m_name, timeout.count()));
          !ready) {
        return std::unexpected(ready.error());
      }
      UniqueFd conn(::accept4(m_socket.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (conn.get() < 0) continue;  // the client gave up meanwhile
      auto channel = admit(std::move(conn));
      if (channel) return channel;
      shm::log().warn("shm://{}: refused a client: {}", m_name, channel.error().describe());
    }
  }

  std::string endpoint() const override { return "shm://" + m_name; }

 private:
  Result<std::unique_ptr<Channel>> admit(UniqueFd conn) {
    const auto deadline = Clock::now() + m_config.connectTimeout;
    if (auto ready = waitReadable(conn.get(), deadline, "the client sent no connect request"); !ready) {
      return std::unexpected(ready.error());
    }
    ConnectRequest request{};
    iovec iov{&request, sizeof(request)};
    alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))]{};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf;
    msg.msg_controllen = sizeof(cbuf);
    const auto got = ::recvmsg(conn.get(), &msg, MSG_CMSG_CLOEXEC);
    const cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    UniqueFd memfd(cmsg && cmsg->cmsg_type == SCM_RIGHTS && cmsg->cmsg_len == CMSG_LEN(sizeof(int))
                       ? *reinterpret_cast<const int*>(CMSG_DATA(cmsg))
                       : -1);
    if (got != sizeof(request) || request.magic != kMagic || request.version != kVersion || memfd.get() < 0 ||
        (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
      return fail(Errc::kMalformed, "malformed shm connect request");
    }
    struct stat st{};
    if (::fstat(memfd.get(), &st) != 0 || st.st_size < static_cast<off_t>(kControlBytes)) {
      return fail(Errc::kMalformed, "shm control block is too small");
    }
    void* addr = ::mmap(nullptr, kControlBytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(), 0);
    if (addr == MAP_FAILED) return fail(Errc::kSystem, "mmap of the shm control block failed", errno);
    ControlMapping control(addr);
    if (control.block->magic != kMagic) return fail(Errc::kMalformed, "shm control block has a bad magic");
    auto ports = openPorts(m_name, request.sessionId, kServerToClient);
    if (!ports) return std::unexpected(ports.error());
    const auto what = fmt::format("shm://{}#{:016x}", m_name, request.sessionId);
    if (auto ok = waitConnected(**ports, deadline, what); !ok) return std::unexpected(ok.error());
    const ConnectReply reply{kMagic, 0};
    if (::send(conn.get(), &reply, sizeof(reply), MSG_NOSIGNAL) != sizeof(reply)) {
      return fail(Errc::kDisconnected, what + ": the client left during set-up");
    }
    shm::log().debug("{}: session with pid {} open", what, request.pid);
    return std::make_unique<ShmChannel>(m_name, request.sessionId, kServerToClient, std::move(conn),
                                        std::move(control), std::move(*ports), m_config);
  }

  std::string m_name;
  UniqueFd m_socket;
  TransportConfig m_config;
};

}  // namespace

Result<std::unique_ptr<Listener>> listenShm(const Endpoint& ep, const TransportConfig& config) {
  if (ep.kind != Endpoint::Kind::kShm) {
    return fail(Errc::kInvalidArgument, fmt::format("listenShm needs an shm:// endpoint, not {}", ep.toString()));
  }
  if (auto runtime = shm::ensureRuntime(); !runtime) return std::unexpected(runtime.error());
  auto fd = sys("socket", [] { return ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0); });
  if (!fd) return std::unexpected(fd.error());
  UniqueFd socket(*fd);
  socklen_t length = 0;
  const auto addr = listenAddress(ep.name, length);
  if (::bind(socket.get(), reinterpret_cast<const sockaddr*>(&addr), length) != 0) {
    if (errno == EADDRINUSE) {
      return fail(Errc::kUnavailable, fmt::format("another process already listens on shm://{}", ep.name));
    }
    return fail(Errc::kSystem, fmt::format("bind for shm://{}: {}", ep.name, std::strerror(errno)), errno);
  }
  if (auto ok = sys("listen", [&] { return ::listen(socket.get(), 64); }); !ok) return std::unexpected(ok.error());
  return std::make_unique<ShmListener>(ep.name, std::move(socket), config);
}

Result<std::unique_ptr<Channel>> connectShm(const Endpoint& ep, const TransportConfig& config) {
  if (ep.kind != Endpoint::Kind::kShm) {
    return fail(Errc::kInvalidArgument, fmt::format("connectShm needs an shm:// endpoint, not {}", ep.toString()));
  }
  const auto deadline = Clock::now() + config.connectTimeout;
  if (auto runtime = shm::ensureRuntime(); !runtime) return std::unexpected(runtime.error());
  auto fd = sys("socket", [] { return ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0); });
  if (!fd) return std::unexpected(fd.error());
  UniqueFd socket(*fd);
  socklen_t length = 0;
  const auto addr = listenAddress(ep.name, length);
  while (::connect(socket.get(), reinterpret_cast<const sockaddr*>(&addr), length) != 0) {
    if (errno == ECONNREFUSED || errno == ENOENT) {
      return fail(Errc::kUnavailable, fmt::format("no Flyt listener on shm://{}", ep.name));
    }
    if (errno != EAGAIN && errno != EINTR) {
      return fail(Errc::kSystem, fmt::format("connect to shm://{}: {}", ep.name, std::strerror(errno)), errno);
    }
    if (Clock::now() >= deadline) {
      return fail(Errc::kTimeout, fmt::format("shm://{} accepted no connection within {} ms", ep.name,
                                              config.connectTimeout.count()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  auto memfdRc = sys("memfd_create", [] { return ::memfd_create("flyt-shm-control", MFD_CLOEXEC); });
  if (!memfdRc) return std::unexpected(memfdRc.error());
  UniqueFd memfd(*memfdRc);
  if (auto ok = sys("ftruncate", [&] { return ::ftruncate(memfd.get(), kControlBytes); }); !ok) {
    return std::unexpected(ok.error());
  }
  void* mapped = ::mmap(nullptr, kControlBytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(), 0);
  if (mapped == MAP_FAILED) return fail(Errc::kSystem, "mmap of the shm control block failed", errno);
  ControlMapping control(mapped);
  new (control.block) ControlBlock{kMagic, {0, 0}};

  const std::uint64_t sessionId = newSessionId();
  const auto what = fmt::format("shm://{}#{:016x}", ep.name, sessionId);
  auto ports = openPorts(ep.name, sessionId, kClientToServer);
  if (!ports) return std::unexpected(ports.error());

  ConnectRequest request{kMagic, kVersion, sessionId, static_cast<std::uint32_t>(::getpid()), 0};
  iovec iov{&request, sizeof(request)};
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))]{};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof(cbuf);
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  const int passed = memfd.get();
  std::memcpy(CMSG_DATA(cmsg), &passed, sizeof(int));
  if (::sendmsg(socket.get(), &msg, MSG_NOSIGNAL) != sizeof(request)) {
    return fail(Errc::kDisconnected, fmt::format("{}: sending the connect request failed: {}", what,
                                                 std::strerror(errno)), errno);
  }
  if (auto ready = waitReadable(socket.get(), deadline,
                                fmt::format("{}: the listener did not complete set-up within {} ms", what,
                                            config.connectTimeout.count()));
      !ready) {
    return std::unexpected(ready.error());
  }
  ConnectReply reply{};
  if (::recv(socket.get(), &reply, sizeof(reply), 0) != sizeof(reply) || reply.magic != kMagic || reply.status != 0) {
    return fail(Errc::kUnavailable, fmt::format("{}: the listener refused or dropped the session", what));
  }
  if (auto ok = waitConnected(**ports, deadline, what); !ok) return std::unexpected(ok.error());
  return std::make_unique<ShmChannel>(ep.name, sessionId, kClientToServer, std::move(socket),
                                      std::move(control), std::move(*ports), config);
}

}  // namespace flyt::transport
