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
// The chunk pools are shared by every session of the host, so a session also holds at most a
// window of chunks per size tier (shm_chunk.hpp kTierWindow; counted until the receiver releases
// them, ControlBlock::released), and RouDi's pools hold every window of shm_sessions sessions: no
// session waits for another's chunks (shmChunkClasses).
//
// A peer that dies without closing its session leaves its ports abandoned, never destroyed: see
// shm_session.hpp (iceoryx 2.0's port locks are not robust).
//
// Lanes: every message is named, in order, by a record in its direction's lane, a single-producer
// single-consumer byte ring in the memfd after the control block (ControlBlock::lanes). A message
// whose frame (shm_chunk.hpp's format) is at most kLaneMaxFrame bytes travels in the record
// itself; a larger one is published as an iceoryx chunk first and its record only says so. Calls
// and replies thus cost a few cache lines each way instead of iceoryx's pool and queue operations
// (which matter for calls that wait: a small copy, a launch and synchronise), and large payloads
// stay zero-copy. Records: {u32 bytes, u32 kind} + the frame, 8-byte aligned; a record never wraps
// (kWrap skips the rest of the ring). The receiver copies a record's frame out of the ring before it
// looks at it, so a peer that rewrites the ring meanwhile changes nothing it checked; a lane index or
// record that cannot be right breaks the session (kMalformed). A receiver that has spun for its spin
// time without a message sleeps on LaneIndex::waiting (a futex in the memfd), which the sender wakes.
//
// The chunk format is described in shm_chunk.hpp.
#include "flyt/transport/shm_channel.hpp"

#include <linux/futex.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
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

#include "flyt/transport/handshake.hpp"
#include "flyt/transport/sys.hpp"
#include "shm_chunk.hpp"
#include "shm_session.hpp"
#include "shm_runtime.hpp"

namespace flyt::transport {
namespace {

using Clock = std::chrono::steady_clock;
using capnp::word;
using shm::kHeaderWords;
using shm::kMagic;
using shm::kVersion;
using shm::ControlBlock;
using shm::Ports;
using shm::kClientToServer;
using shm::kServerToClient;
using shm::ConnectReply;
using shm::ConnectRequest;
using shm::UniqueFd;
using shm::listenAddress;

constexpr std::uint64_t kWindow = 128;         // messages in flight per direction
constexpr auto kSpin = std::chrono::microseconds(50);
constexpr auto kLivenessSlice = std::chrono::milliseconds(5);
constexpr auto kSendLivenessInterval = std::chrono::milliseconds(1);

using shm::LaneRecord;
using shm::kFrame;
using shm::kChunk;
using shm::kWrap;
constexpr std::size_t kLaneMaxFrame = 32U << 10;
constexpr std::size_t kScratchWords = 8192;  // messages are built here first (64 KiB; larger: heap)
constexpr std::size_t kScratchFirstSegmentWords = 256;

void futexWait(std::atomic<std::uint32_t>& word, std::uint32_t expected, std::chrono::nanoseconds timeout) {
  timespec ts{static_cast<time_t>(timeout.count() / 1'000'000'000), static_cast<long>(timeout.count() % 1'000'000'000)};
  (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}
void futexWake(std::atomic<std::uint32_t>& word) {
  (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

// A message that came by its lane: its frame, copied out of the ring.
class LaneBody final : public Incoming::Body {
 public:
  explicit LaneBody(std::size_t bytes) : m_words(std::make_unique<word[]>(bytes / sizeof(word))), m_bytes(bytes) {}
  [[nodiscard]] void* data() { return m_words.get(); }
  Result<void> parse() { return m_frame.parse(m_words.get(), static_cast<std::uint32_t>(m_bytes)); }
  capnp::MessageReader& reader() override { return m_frame.reader(); }
  std::span<const std::byte> payload() const override { return m_frame.payload(); }

 private:
  std::unique_ptr<word[]> m_words;
  std::size_t m_bytes;
  shm::ChunkReader m_frame;
};

class ShmBody final : public Incoming::Body {
 public:
  // `released`: the control block's counter of the chunk's tier for this direction.
  ShmBody(std::shared_ptr<Ports> ports, const void* chunk, std::atomic<std::uint64_t>& released)
      : m_ports(std::move(ports)), m_chunk(chunk), m_released(released) {}
  ~ShmBody() override {
    std::lock_guard lock(m_ports->subscriberMutex);
    if (m_ports->abandoned.load(std::memory_order_acquire)) return;
    m_ports->subscriber.release(m_chunk);
    m_released.fetch_add(1, std::memory_order_release);  // the chunk is back in the pool: credit
  }
  ShmBody(const ShmBody&) = delete;
  ShmBody& operator=(const ShmBody&) = delete;

  Result<void> parse(std::uint32_t chunkBytes) { return m_frame.parse(m_chunk, chunkBytes); }
  capnp::MessageReader& reader() override { return m_frame.reader(); }
  std::span<const std::byte> payload() const override { return m_frame.payload(); }

 private:
  std::shared_ptr<Ports> m_ports;
  const void* m_chunk;
  std::atomic<std::uint64_t>& m_released;
  shm::ChunkReader m_frame;
};

class ShmChannel final : public Channel {
 public:
  ShmChannel(std::string name, std::uint64_t sessionId, int side, UniqueFd socket, std::shared_ptr<Ports> ports,
             const TransportConfig& config)
      : m_name(std::move(name)), m_sessionId(sessionId), m_sendDir(side), m_recvDir(1 - side),
        m_socket(std::move(socket)), m_ports(std::move(ports)), m_config(config),
        m_classes(shmChunkClasses(config)) {}
  ~ShmChannel() override {
    if (peerGone()) abandonUnlessPeerClosed();
    m_ports.reset();  // before the socket closes: the peer then sees ControlBlock::closed
  }
  ShmChannel(const ShmChannel&) = delete;
  ShmChannel& operator=(const ShmChannel&) = delete;

  Result<void> send(BuildMessage build, std::span<const std::byte> payload) override;
  Result<Incoming> receive(std::chrono::milliseconds timeout) override;
  std::size_t maxPayloadBytes() const override { return m_config.shmInlinePayloadBytes; }
  std::string describe() const override { return fmt::format("shm://{}#{:016x}", m_name, m_sessionId); }
  bool sharesHostMemory() const override { return true; }
  void setReceiveSpin(std::chrono::microseconds spin) override { m_receiveSpin = spin; }

 private:
  std::unexpected<Error> broken(Errc code, std::string message) {
    m_broken = Error{code, std::move(message)};
    return std::unexpected(*m_broken);
  }
  // The peer is gone: from here on this session's ports are not touched (m_broken stops every call).
  std::unexpected<Error> peerLeft() {
    abandonUnlessPeerClosed();
    return broken(Errc::kDisconnected, fmt::format("{}: peer is gone", describe()));
  }
  // A peer that went without marking closed may have died holding a lock of these ports.
  void abandonUnlessPeerClosed() {
    if (m_ports->control.block->closed[m_recvDir].load(std::memory_order_acquire) == 0) {
      m_ports->abandoned.store(true, std::memory_order_release);
      shm::noteAbandonedSession();
    }
  }
  [[nodiscard]] bool peerGone() const {
    pollfd p{m_socket.get(), POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    return (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLIN)) != 0;  // no data after set-up
  }
  [[nodiscard]] ControlBlock& control() { return *m_ports->control.block; }
  [[nodiscard]] shm::LaneIndex& sendLane() { return control().lanes[m_sendDir]; }
  [[nodiscard]] shm::LaneIndex& recvLane() { return control().lanes[m_recvDir]; }
  // Room for a record of `bytes` at the send lane's head (after a kWrap record where it would not
  // fit before the ring's end): where to write it. Waits for the receiver as waitForCredit does.
  Result<std::byte*> reserveLane(std::size_t bytes);
  // Publishes the record of `bytes` written at the head and wakes a sleeping receiver.
  void commitLane(std::size_t bytes);
  Result<void> sendChunk(kj::ArrayPtr<const kj::ArrayPtr<const word>> segments, std::size_t messageWords,
                         std::span<const std::byte> payload);
  std::optional<Result<Incoming>> takeChunk();
  void releaseLoan(void* chunk, std::uint32_t bytes) {
    --m_held[shm::chunkTier(bytes)];
    if (!m_broken) m_ports->publisher.release(chunk);  // after peerLeft() the chunk is left to RouDi
  }
  Result<void> waitForCredit();
  Result<void> waitForChunkCredit(std::size_t tier);
  // A chunk of exactly `bytes` (one of m_classes), within this session's window of its tier.
  Result<void*> loan(std::uint32_t bytes);
  std::optional<Result<Incoming>> tryTake();

  std::string m_name;
  std::uint64_t m_sessionId;
  int m_sendDir;
  int m_recvDir;
  UniqueFd m_socket;
  std::shared_ptr<Ports> m_ports;
  TransportConfig m_config;
  std::vector<ShmChunkClass> m_classes;
  std::uint64_t m_sent = 0;
  std::uint64_t m_held[shm::kTiers] = {};  // chunks loaned per tier (compare ControlBlock::released)
  Clock::time_point m_nextLivenessCheck{};  // send()'s next look at the peer's liveness
  std::uint64_t m_laneHead = 0;  // the send lane's head as this side wrote it
  std::uint64_t m_laneTailSeen = 0;  // the send lane's tail as last read
  std::uint64_t m_laneTail = 0;  // the receive lane's tail as this side consumed it
  std::unique_ptr<word[]> m_scratch = std::make_unique<word[]>(kScratchWords);
  std::optional<Error> m_broken;
  std::chrono::microseconds m_receiveSpin = kSpin;
};

Result<void> ShmChannel::waitForCredit() {
  auto& consumed = control().consumed[m_sendDir];
  if (m_sent - consumed.load(std::memory_order_acquire) < kWindow) return {};
  const auto start = Clock::now();
  for (auto backoff = std::chrono::microseconds(0);;) {
    if (m_sent - consumed.load(std::memory_order_acquire) < kWindow) return {};
    if (peerGone()) return peerLeft();
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

// Waits until this session holds fewer chunks of `tier` than its window. The worker gives up after
// peerTimeout (an application that keeps its replies is broken); the application waits as long as
// its worker lives, since the worker may hold a message through a long GPU call, as a reply may take.
Result<void> ShmChannel::waitForChunkCredit(std::size_t tier) {
  auto& released = control().released[m_sendDir][tier];
  const auto window = shm::kTierWindow[tier];
  const auto start = Clock::now();
  for (auto backoff = std::chrono::microseconds(0);;) {
    if (m_held[tier] - released.load(std::memory_order_acquire) < window) return {};
    if (peerGone()) return peerLeft();
    if (m_sendDir == kServerToClient && Clock::now() - start > m_config.peerTimeout) {
      return fail(Errc::kTimeout, fmt::format("{}: the peer did not give back its {} shm chunks of tier {} within {} ms",
                                              describe(), window, tier, m_config.peerTimeout.count()));
    }
    if (Clock::now() - start > kSpin) {
      backoff = std::min(backoff + std::chrono::microseconds(10), std::chrono::microseconds(500));
      std::this_thread::sleep_for(backoff);
    }
  }
}

Result<void*> ShmChannel::loan(std::uint32_t bytes) {
  const auto tier = shm::chunkTier(bytes);
  if (auto credit = waitForChunkCredit(tier); !credit) return std::unexpected(credit.error());
  const auto start = Clock::now();
  for (;;) {
    auto chunk = m_ports->publisher.loan(bytes, alignof(word));
    if (!chunk.has_error()) {
      ++m_held[tier];
      return chunk.value();
    }
    const auto error = chunk.get_error();
    if (error != iox::popo::AllocationError::RUNNING_OUT_OF_CHUNKS &&
        error != iox::popo::AllocationError::TOO_MANY_CHUNKS_ALLOCATED_IN_PARALLEL) {
      return fail(Errc::kUnavailable, fmt::format("{}: RouDi has no shm chunk of {} bytes (allocation error {})",
                                                  describe(), bytes, static_cast<int>(error)));
    }
    // Only when more sessions than shm_sessions share the pools, or RouDi was sized by another
    // configuration.
    if (peerGone()) return peerLeft();
    if (Clock::now() - start > m_config.peerTimeout) {
      return fail(Errc::kTimeout, fmt::format("{}: no free shm chunk of {} bytes within {} ms (more sessions "
                                              "than the host's RouDi was sized for: shm_sessions)",
                                              describe(), bytes, m_config.peerTimeout.count()));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

Result<std::byte*> ShmChannel::reserveLane(std::size_t bytes) {
  auto& lane = sendLane();
  std::byte* ring = shm::laneBytes(&control(), m_sendDir);
  const std::size_t offset = m_laneHead % shm::kLaneBytes;
  const bool wraps = offset + bytes > shm::kLaneBytes;
  const std::size_t needed = bytes + (wraps ? shm::kLaneBytes - offset : 0);
  // The receiver's tail is read only when the last one read leaves too little room: the line it
  // lives on then mostly stays in the receiver's cache.
  const auto start = Clock::now();
  for (auto backoff = std::chrono::microseconds(0);
       shm::kLaneBytes - (m_laneHead - m_laneTailSeen) < needed;) {
    const std::uint64_t tail = lane.tail.load(std::memory_order_acquire);
    if (tail > m_laneHead || tail < m_laneTailSeen || m_laneHead - tail > shm::kLaneBytes) {
      return broken(Errc::kMalformed, fmt::format("{}: the peer's lane tail {} does not fit the head {}", describe(),
                                                  tail, m_laneHead));
    }
    m_laneTailSeen = tail;
    if (shm::kLaneBytes - (m_laneHead - tail) >= needed) break;
    if (peerGone()) return peerLeft();
    if (Clock::now() - start > m_config.peerTimeout) {
      return fail(Errc::kTimeout, fmt::format("{}: peer did not drain its lane ({} bytes) within {} ms", describe(),
                                              shm::kLaneBytes, m_config.peerTimeout.count()));
    }
    if (Clock::now() - start > kSpin) {
      backoff = std::min(backoff + std::chrono::microseconds(10), std::chrono::microseconds(500));
      std::this_thread::sleep_for(backoff);
    }
  }
  if (wraps) {
    const LaneRecord wrap{0, kWrap};
    std::memcpy(ring + offset, &wrap, sizeof wrap);
    m_laneHead += shm::kLaneBytes - offset;
  }
  return ring + m_laneHead % shm::kLaneBytes;
}

void ShmChannel::commitLane(std::size_t bytes) {
  auto& lane = sendLane();
  m_laneHead += bytes;
  lane.head.store(m_laneHead, std::memory_order_seq_cst);
  if (lane.waiting.load(std::memory_order_seq_cst) != 0 && lane.waiting.exchange(0, std::memory_order_seq_cst) != 0) {
    futexWake(lane.waiting);
  }
}

Result<void> ShmChannel::send(BuildMessage build, std::span<const std::byte> payload) {
  if (m_broken) return std::unexpected(*m_broken);
  if (payload.size() > maxPayloadBytes()) {
    return fail(Errc::kTooLarge, fmt::format("payload of {} bytes exceeds the {}-byte shm inline limit; "
                                             "use the data region", payload.size(), maxPayloadBytes()));
  }
  // A dead peer is looked for at most once a millisecond here (a poll() per call would be a good
  // part of a round trip); receive() and every wait for room look each time.
  if (const auto now = Clock::now(); now >= m_nextLivenessCheck) {
    if (peerGone()) return peerLeft();
    m_nextLivenessCheck = now + kSendLivenessInterval;
  }
  if (auto credit = waitForCredit(); !credit) return credit;

  shm::ChunkBuilder builder(m_scratch.get(), kScratchWords, kScratchFirstSegmentWords);
  kj::ArrayPtr<const kj::ArrayPtr<const word>> segments;
  try {
    build(builder);
    segments = builder.getSegmentsForOutput();
  } catch (const kj::Exception& e) {
    return fail(Errc::kInvalidArgument, fmt::format("building the message failed: {}", e.getDescription().cStr()));
  }
  std::size_t messageWords = 0;
  for (auto segment : segments) messageWords += segment.size();
  if (messageWords * sizeof(word) > m_config.maxMessageBytes) {
    return fail(Errc::kTooLarge, fmt::format("message of {} bytes exceeds the {}-byte limit",
                                             messageWords * sizeof(word), m_config.maxMessageBytes));
  }
  const std::size_t frameBytes = (kHeaderWords + messageWords) * sizeof(word) + shm::roundUp8(payload.size());
  if (segments.size() > shm::kMaxSegments || frameBytes > kLaneMaxFrame) {
    return sendChunk(segments, messageWords, payload);
  }
  auto at = reserveLane(sizeof(LaneRecord) + frameBytes);
  if (!at) return std::unexpected(at.error());
  const LaneRecord record{static_cast<std::uint32_t>(frameBytes), kFrame};
  std::memcpy(*at, &record, sizeof record);
  auto* frame = reinterpret_cast<word*>(*at + sizeof record);
  shm::FrameHeader header{kMagic, kVersion, 0, 0, static_cast<std::uint32_t>(payload.size()), {}};
  const std::size_t payloadOffset = shm::copySegments(frame, segments, header);
  shm::finishFrame(frame, header, payloadOffset, payload);
  commitLane(sizeof(LaneRecord) + frameBytes);
  ++m_sent;
  return {};
}

// A message too large for its lane: copied into an iceoryx chunk that fits, published, and named by
// a kChunk record.
Result<void> ShmChannel::sendChunk(kj::ArrayPtr<const kj::ArrayPtr<const word>> segments, std::size_t messageWords,
                                   std::span<const std::byte> payload) {
  const std::size_t needed = (kHeaderWords + messageWords) * sizeof(word) + shm::roundUp8(payload.size());
  std::optional<std::uint32_t> classBytes;
  for (const auto& c : m_classes) {
    if (c.bytes >= needed) {
      classBytes = c.bytes;
      break;
    }
  }
  if (!classBytes) {
    return fail(Errc::kTooLarge, fmt::format("message of {} bytes plus {} payload bytes fits no shm chunk "
                                             "(largest {}); use the data region",
                                             messageWords * sizeof(word), payload.size(), m_classes.back().bytes));
  }
  // Reserved before the chunk is loaned: nothing can fail between the publication and its record.
  auto at = reserveLane(sizeof(LaneRecord));
  if (!at) return std::unexpected(at.error());
  auto chunk = loan(*classBytes);
  if (!chunk) return std::unexpected(chunk.error());
  // Far pointers name segments by index, so the segments keep their identity; a message of more
  // segments than the header holds is first flattened into one.
  std::optional<capnp::MallocMessageBuilder> flat;
  if (segments.size() > shm::kMaxSegments) {
    capnp::ReaderOptions options;
    options.traversalLimitInWords = 4 * messageWords + 1024;
    capnp::SegmentArrayMessageReader reader(segments, options);
    flat.emplace(static_cast<capnp::uint>(messageWords + 16), capnp::AllocationStrategy::FIXED_SIZE);
    flat->setRoot(reader.getRoot<capnp::AnyPointer>());
    segments = flat->getSegmentsForOutput();
  }
  shm::FrameHeader header{kMagic, kVersion, 0, 0, static_cast<std::uint32_t>(payload.size()), {}};
  const std::size_t payloadOffset = shm::copySegments(static_cast<word*>(*chunk), segments, header);
  shm::finishFrame(*chunk, header, payloadOffset, payload);
  m_ports->publisher.publish(*chunk);
  const LaneRecord record{0, kChunk};
  std::memcpy(*at, &record, sizeof record);
  commitLane(sizeof record);
  ++m_sent;
  return {};
}

// The iceoryx chunk a kChunk record named: published before its record, so it is in the queue.
std::optional<Result<Incoming>> ShmChannel::takeChunk() {
  const void* chunk = nullptr;
  {
    std::lock_guard lock(m_ports->subscriberMutex);
    auto taken = m_ports->subscriber.take();
    if (taken.has_error()) {
      if (taken.get_error() == iox::popo::ChunkReceiveResult::NO_CHUNK_AVAILABLE) {
        return broken(Errc::kMalformed, fmt::format("{}: the lane names a shm chunk that was never sent", describe()));
      }
      return fail(Errc::kUnavailable, fmt::format("{}: more than {} received messages are still held",
                                                  describe(), iox::MAX_CHUNKS_HELD_PER_SUBSCRIBER_SIMULTANEOUSLY));
    }
    chunk = taken.value();
  }
  control().consumed[m_recvDir].fetch_add(1, std::memory_order_release);
  const auto chunkBytes = iox::mepoo::ChunkHeader::fromUserPayload(chunk)->userPayloadSize();
  auto body = std::make_unique<ShmBody>(m_ports, chunk, control().released[m_recvDir][shm::chunkTier(chunkBytes)]);
  if (auto ok = body->parse(chunkBytes); !ok) {
    shm::log().warn("{}: {}", describe(), ok.error().message);
    return broken(ok.error().code, fmt::format("{}: {}", describe(), ok.error().message));
  }
  return Incoming(std::move(body));
}

std::optional<Result<Incoming>> ShmChannel::tryTake() {
  auto& lane = recvLane();
  const std::byte* ring = shm::laneBytes(&control(), m_recvDir);
  for (;;) {
    const std::uint64_t head = lane.head.load(std::memory_order_acquire);
    if (head == m_laneTail) return std::nullopt;
    const std::uint64_t ready = head - m_laneTail;
    if (head < m_laneTail || ready > shm::kLaneBytes || ready % sizeof(LaneRecord) != 0) {
      return broken(Errc::kMalformed, fmt::format("{}: the peer's lane head {} does not fit the tail {}", describe(),
                                                  head, m_laneTail));
    }
    const std::size_t offset = m_laneTail % shm::kLaneBytes;
    LaneRecord record;
    std::memcpy(&record, ring + offset, sizeof record);
    std::size_t consumed = sizeof record;
    std::unique_ptr<LaneBody> body;
    if (record.kind == kWrap) {
      consumed = shm::kLaneBytes - offset;
    } else if (record.kind == kFrame) {
      if (record.bytes % sizeof(word) != 0 || record.bytes < kHeaderWords * sizeof(word) || record.bytes > kLaneMaxFrame ||
          offset + sizeof record + record.bytes > shm::kLaneBytes) {
        return broken(Errc::kMalformed, fmt::format("{}: a lane record of {} bytes at {} is malformed", describe(),
                                                    record.bytes, offset));
      }
      consumed += record.bytes;
      body = std::make_unique<LaneBody>(record.bytes);
      std::memcpy(body->data(), ring + offset + sizeof record, record.bytes);
    } else if (record.kind != kChunk) {
      return broken(Errc::kMalformed, fmt::format("{}: a lane record of unknown kind {:#x}", describe(), record.kind));
    }
    if (consumed > ready) {
      return broken(Errc::kMalformed, fmt::format("{}: a lane record of {} bytes runs past the {} written",
                                                  describe(), consumed, ready));
    }
    m_laneTail += consumed;
    lane.tail.store(m_laneTail, std::memory_order_release);
    if (record.kind == kWrap) continue;
    if (record.kind == kChunk) return takeChunk();
    control().consumed[m_recvDir].fetch_add(1, std::memory_order_release);
    if (auto ok = body->parse(); !ok) {
      shm::log().warn("{}: {}", describe(), ok.error().message);
      return broken(ok.error().code, fmt::format("{}: {}", describe(), ok.error().message));
    }
    return Incoming(std::move(body));
  }
}

Result<Incoming> ShmChannel::receive(std::chrono::milliseconds timeout) {
  if (m_broken) return std::unexpected(*m_broken);
  const auto start = Clock::now();
  const auto deadline = start + timeout;
  do {
    if (auto got = tryTake()) return std::move(*got);
  } while (Clock::now() - start < m_receiveSpin);
  auto& lane = recvLane();
  for (;;) {
    if (peerGone()) {
      // sent just before it went; the lane and take() are lock-free, so no lock of the dead peer is taken
      if (auto got = tryTake()) return std::move(*got);
      return peerLeft();
    }
    const auto now = Clock::now();
    if (now >= deadline) {
      return fail(Errc::kTimeout, fmt::format("{}: no message within {} ms", describe(), timeout.count()));
    }
    const auto slice = std::min<Clock::duration>(deadline - now, kLivenessSlice);
    // Announce the sleep, then look once more: a sender that wrote before seeing the flag is seen here.
    lane.waiting.store(1, std::memory_order_seq_cst);
    if (lane.head.load(std::memory_order_seq_cst) == m_laneTail) futexWait(lane.waiting, 1, slice);
    lane.waiting.store(0, std::memory_order_relaxed);
    if (auto got = tryTake()) return std::move(*got);
  }
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
    if (got == sizeof(request) && request.magic == kMagic && request.version != shm::kSetupVersion) {
      const ConnectReply refusal{kMagic, shm::kReplyOtherVersion};
      (void)::send(conn.get(), &refusal, sizeof(refusal), MSG_NOSIGNAL);
      return fail(Errc::kMalformed, fmt::format("shm connect request of set-up version {} from pid {}; this side "
                                                "speaks {} (mixed Flyt releases)",
                                                request.version, request.pid, shm::kSetupVersion));
    }
    if (got != sizeof(request) || request.magic != kMagic || memfd.get() < 0 ||
        (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
      return fail(Errc::kMalformed, "malformed shm connect request");
    }
    auto control = shm::mapControl(memfd.get());
    if (!control) return std::unexpected(control.error());
    auto ports = shm::openPorts(m_name, request.sessionId, kServerToClient, std::move(*control));
    if (!ports) return std::unexpected(ports.error());
    const auto what = fmt::format("shm://{}#{:016x}", m_name, request.sessionId);
    if (auto ok = shm::waitConnected(**ports, deadline, what); !ok) return std::unexpected(ok.error());
    const ConnectReply reply{kMagic, 0};
    if (::send(conn.get(), &reply, sizeof(reply), MSG_NOSIGNAL) != sizeof(reply)) {
      return fail(Errc::kDisconnected, what + ": the client left during set-up");
    }
    shm::log().debug("{}: session with pid {} open", what, request.pid);
    return std::make_unique<ShmChannel>(m_name, request.sessionId, kServerToClient, std::move(conn),
                                        std::move(*ports), m_config);
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

  UniqueFd memfd;
  auto control = shm::createControl(memfd);
  if (!control) return std::unexpected(control.error());

  const std::uint64_t sessionId = newSessionId();
  const auto what = fmt::format("shm://{}#{:016x}", ep.name, sessionId);
  auto ports = shm::openPorts(ep.name, sessionId, kClientToServer, std::move(*control));
  if (!ports) return std::unexpected(ports.error());

  ConnectRequest request{kMagic, shm::kSetupVersion, sessionId, static_cast<std::uint32_t>(::getpid()), 0};
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
  const auto replied = ::recv(socket.get(), &reply, sizeof(reply), 0);
  if (replied == sizeof(reply) && reply.magic == kMagic && reply.status == shm::kReplyOtherVersion) {
    return fail(Errc::kUnavailable, fmt::format("{}: the listener speaks another shm set-up version than this "
                                                "library ({}): use the same Flyt release on both sides",
                                                what, shm::kSetupVersion));
  }
  if (replied != sizeof(reply) || reply.magic != kMagic || reply.status != 0) {
    return fail(Errc::kUnavailable, fmt::format("{}: the listener refused or dropped the session", what));
  }
  if (auto ok = shm::waitConnected(**ports, deadline, what); !ok) return std::unexpected(ok.error());
  return std::make_unique<ShmChannel>(ep.name, sessionId, kClientToServer, std::move(socket), std::move(*ports),
                                      config);
}

}  // namespace flyt::transport
