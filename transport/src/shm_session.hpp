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
#include "iceoryx_posh/popo/wait_set.hpp"

#include "flyt/transport/error.hpp"
#include "shm_chunk.hpp"

namespace flyt::transport::shm {

// Shared by both ends through a memfd. consumed[d]: messages taken by the receiver of direction d.
// closed[s]: set by side s (s = its send direction) once it has destroyed its ports of the session.
// released[d][t]: chunks of tier t (shm_chunk.hpp) the receiver of direction d has given back.
struct ControlBlock {
  std::uint64_t magic;
  std::atomic<std::uint64_t> consumed[2];
  std::atomic<std::uint32_t> closed[2];
  std::atomic<std::uint64_t> released[2][kTiers];
};
static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(ControlBlock) == 96 && alignof(ControlBlock) == 8);
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

// Owns one kControlBytes mapping of the control block.
struct ControlMapping {
  ControlMapping() = default;
  explicit ControlMapping(void* addr) : block(static_cast<ControlBlock*>(addr)) {}
  ControlMapping(ControlMapping&& other) noexcept : block(std::exchange(other.block, nullptr)) {}
  ~ControlMapping();
  ControlBlock* block = nullptr;
};

// A fresh control block in a new memfd, which `memfd` receives (to be passed to the peer).
[[nodiscard]] Result<ControlMapping> createControl(UniqueFd& memfd);
// Maps the control block in a memfd a client passed; kMalformed when it is too small or unmarked.
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
  iox::popo::WaitSet<1> waitSet;       // declared last: detaches before the subscriber goes
  std::mutex subscriberMutex;          // take() on the receiving thread vs release() from any thread
  std::atomic<bool> abandoned{false};  // the peer died uncleanly: never touch the ports again
};

// Creates the session's ports for `side` (kClientToServer: the client) with the services
// ("flyt", name, "c2s.<id>") and ("flyt", name, "s2c.<id>"), and attaches the subscriber to the
// WaitSet. Blocks while RouDi answers (iceoryx registers ports over its IPC channel).
[[nodiscard]] Result<std::shared_ptr<Ports>> openPorts(const std::string& name, std::uint64_t sessionId, int side,
                                                       ControlMapping control);

// Waits until both directions of `ports` are connected, up to `deadline`; kTimeout names `what`.
[[nodiscard]] Result<void> waitConnected(const Ports& ports, std::chrono::steady_clock::time_point deadline,
                                         const std::string& what);

}  // namespace flyt::transport::shm
