// One ShmChannel session's shared state (its two iceoryx ports and the memfd control block) and the
// set-up messages of the liveness socket (described in shm_channel.cpp). Private to the shm transport.
//
// Why a dead peer's ports are abandoned, not destroyed: iceoryx 2.0 guards each port with a mutex in
// shared memory that is not robust. A peer killed inside publish() or loan() keeps its publisher's
// lock, and possibly the lock of our subscriber's queue, held forever; destroying our subscriber
// (WaitSet detach -> unsetConditionVariable) would then block this process for good. So once the
// liveness socket hangs up and the peer has not set ControlBlock::closed (which it does only after
// destroying its own ports, so then it holds none of their locks), the channel marks the session
// `abandoned`: nothing touches its ports again, and the last owner moves it into a process-lifetime
// graveyard instead of destroying it. The memory is reclaimed when this process exits or RouDi
// cleans up after it. A session whose peer is alive or closed normally is destroyed cleanly.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "iceoryx_posh/popo/untyped_publisher.hpp"
#include "iceoryx_posh/popo/untyped_subscriber.hpp"

#include "flyt/transport/error.hpp"
#include "shm_chunk.hpp"

namespace flyt::transport::shm {

// The indices of one direction's message lane (shm_channel.cpp), each on its own cache line: head,
// the bytes the sender has written (counting up forever; the lane's offset is head % kLaneBytes);
// tail, the bytes the receiver has consumed; waiting, set by a receiver about to sleep on it (a
// futex word: the sender wakes it).
struct LaneIndex {
  alignas(64) std::atomic<std::uint64_t> head;
  alignas(64) std::atomic<std::uint64_t> tail;
  alignas(64) std::atomic<std::uint32_t> waiting;
};

// A lane record's head (shm_channel.cpp describes the lanes).
struct LaneRecord {
  std::uint32_t bytes;  // kFrame: the frame's length (a multiple of 8); otherwise 0
  std::uint32_t kind;
};
static_assert(sizeof(LaneRecord) == 8);
constexpr std::uint32_t kFrame = 0x464c4e31;  // the frame follows
constexpr std::uint32_t kChunk = 0x464c4e32;  // the message is the next iceoryx chunk
constexpr std::uint32_t kWrap = 0x464c4e33;   // the record continues at the lane's start

// Shared by both ends through a memfd. consumed[d]: messages taken by the receiver of direction d.
// closed[s]: set by side s (s = its send direction) once it has destroyed its ports of the session.
// released[d][t]: chunks of tier t (shm_chunk.hpp) the receiver of direction d has given back.
// lanes[d]: direction d's message lane, whose bytes follow the control page (laneBytes()).
struct ControlBlock {
  std::uint64_t magic;
  std::atomic<std::uint64_t> consumed[2];
  std::atomic<std::uint32_t> closed[2];
  std::atomic<std::uint64_t> released[2][kTiers];
  LaneIndex lanes[2];
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(ControlBlock) <= 1024 && alignof(ControlBlock) == 64);
constexpr std::size_t kControlBytes = 4096;       // the control page
constexpr std::size_t kLaneBytes = 512U << 10;    // each direction's lane
constexpr std::size_t kMappingBytes = kControlBytes + 2 * kLaneBytes;
// The bytes of direction `direction`'s lane in a mapping of the memfd.
inline std::byte* laneBytes(ControlBlock* block, int direction) {
  return reinterpret_cast<std::byte*>(block) + kControlBytes + static_cast<std::size_t>(direction) * kLaneBytes;
}
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
  std::uint32_t status;  // 0: ready; kReplyOtherVersion: the request's set-up version is not ours
};
constexpr std::uint32_t kReplyOtherVersion = 1;
static_assert(sizeof(ConnectRequest) == 24 && sizeof(ConnectReply) == 8);

// Owns a file descriptor; closes it on destruction.
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

// The abstract unix socket address "\0flyt-shm/<name>"; `length` receives its length.
sockaddr_un listenAddress(const std::string& name, socklen_t& length);

// Owns one kMappingBytes mapping of the memfd: the control block and both lanes.
struct ControlMapping {
  ControlMapping() = default;
  explicit ControlMapping(void* addr) : block(static_cast<ControlBlock*>(addr)) {}
  ControlMapping(ControlMapping&& other) noexcept : block(std::exchange(other.block, nullptr)) {}
  ~ControlMapping();
  ControlBlock* block = nullptr;
};

// A fresh control block in a new memfd, which `memfd` receives (to be passed to the peer). The memfd
// is sealed against shrinking and growing, so that its peer may map it without fear of SIGBUS.
[[nodiscard]] Result<ControlMapping> createControl(UniqueFd& memfd);
// Maps the control block in a memfd a client passed; kMalformed when it is not kMappingBytes, not
// sealed against shrinking, or unmarked.
[[nodiscard]] Result<ControlMapping> mapControl(int memfd);

// Sets ControlBlock::closed[side] when destroyed, i.e. after the ports declared after it.
struct ClosedMark {
  ControlBlock* block;
  int side;
  ~ClosedMark() { block->closed[side].store(1, std::memory_order_release); }
};

// One session's iceoryx ports and control block, shared (openPorts) by the channel and every
// Incoming body, which releases its chunk here. The last owner destroys it, or buries it when
// `abandoned` is set.
struct Ports {
  Ports(ControlMapping mapping, int side, const iox::capro::ServiceDescription& out,
        const iox::capro::ServiceDescription& in);
  [[nodiscard]] bool connected() const;

  ControlMapping control;  // declared first: unmapped last
  ClosedMark closedMark;   // set once the ports below are gone: we hold none of their locks
  iox::popo::UntypedPublisher publisher;
  iox::popo::UntypedSubscriber subscriber;
  std::mutex subscriberMutex;          // take() on the receiving thread vs release() from any thread
  std::atomic<bool> abandoned{false};  // the peer died uncleanly: never touch the ports again
};

// Creates the session's ports for `side` (kClientToServer: the client) with the services
// ("flyt", name, "c2s.<id>") and ("flyt", name, "s2c.<id>"). No WaitSet: receivers wait on their
// lane, which names every message in order (shm_channel.cpp). Blocks while RouDi answers (iceoryx
// registers ports over its IPC channel).
[[nodiscard]] Result<std::shared_ptr<Ports>> openPorts(const std::string& name, std::uint64_t sessionId, int side,
                                                       ControlMapping control);

// Waits until both directions of `ports` are connected, up to `deadline`; kTimeout names `what`.
[[nodiscard]] Result<void> waitConnected(const Ports& ports, std::chrono::steady_clock::time_point deadline,
                                         const std::string& what);

}  // namespace flyt::transport::shm
