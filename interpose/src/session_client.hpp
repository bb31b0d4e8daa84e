// The client side of a session, for either CUDA API Flyt interposes (its runtime, libcudart.so.13,
// and its driver, libcuda.so.1): the one object an interposed library cannot avoid making global.
// It connects lazily, on the first forwarded call, to FLYT_SERVER (set by `flyt run`) or through
// the orchestrator, and keeps the batch of asynchronous calls, the sequence numbers and (on shared
// memory) the session's data region: the staging ring and the pinned host memory.
//
// SessionClient<Traits> is written once for both APIs; Traits names the method ids and the error
// type of one API and how transport failures read as its errors:
//   using Method = ...;             an enum class of method ids (uint32_t underlying)
//   using Error = ...;              cudaError_t or CUresult
//   static constexpr Error kSuccess, kDevicesUnavailable, kUnknown;
//   static constexpr transport::SessionApi kApi;
//   static Error fromStatus(wire::TransportStatus, std::int32_t verbatim);
//   static void noteEarlierFailure(Error);   an earlier batched call failed (the runtime's last error)
// The definitions are in session_client_impl.hpp; each library instantiates its one client.
//
// Threading: every public function may be called from any application thread; calls are
// serialised by one mutex (TODO(perf): a per-thread batch and a receive thread). A flusher thread
// sends a batch nobody sends within 100 µs of its first call (session_client_impl.hpp). A copy that
// pipelines several calls holds the session for its whole length through Client::Session.
// Lock order: the client's mutex may be held while the region's allocator or ring locks are taken,
// never the other way round.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <expected>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "flyt/transport/channel.hpp"
#include "flyt/transport/config.hpp"
#include "flyt/transport/data_region.hpp"
#include "flyt/transport/handshake.hpp"
#include "flyt/wire/session.capnp.h"

namespace flyt::interpose {

// What came back for one synchronous call.
template <class Error>
struct BasicCallOutcome {
  Error error{};
  std::vector<std::byte> results;  // encoded out-arguments (flyt/api/codec.hpp)
  std::vector<std::byte> payload;  // bulk data returned inline, unless await() was given a target
  // The first error of an earlier asynchronous call reported with this reply (also recorded as the
  // thread's last error in the runtime). Synchronising calls return it, as CUDA returns errors of
  // earlier work.
  Error earlier{};
};

// What a session has sent so far (flytbench's count of synchronous calls per training step).
struct CallCounts {
  std::uint64_t calls = 0;     // forwarded calls, batched or waited for
  std::uint64_t waited = 0;    // calls whose reply the caller waited for (round trips)
  std::uint64_t messages = 0;  // messages sent (a batch is one)
};

// A BulkRef into the session's data region (the call's one bulk reference).
struct RegionBulk {
  std::uint32_t segment = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

template <class Traits>
class SessionClient {
 public:
  using Method = typename Traits::Method;
  using Error = typename Traits::Error;
  using Outcome = BasicCallOutcome<Error>;

  // The process's client, connecting on first use. Never null: a client that could not connect
  // answers every call with Traits::kDevicesUnavailable (and logged why, once).
  static SessionClient& get() noexcept;

  // Exclusive use of the session for a sequence of calls (a pipelined copy). Holds the client's
  // mutex until destroyed; replies still owed when it is destroyed are received and their errors
  // become the thread's last error.
  class Session {
   public:
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Connected and not broken.
    [[nodiscard]] bool usable() noexcept;

    // Appends an asynchronous call to the batch (flushing first if the batch is full). Returns the
    // error to report now: kSuccess, or Traits::kDevicesUnavailable when the session is gone.
    // `payload` (inline bytes) and `region` are the call's bulk data; at most one of them.
    [[nodiscard]] Error enqueue(Method method, std::span<const std::byte> args,
                                      std::span<const std::byte> payload = {},
                                      std::optional<RegionBulk> region = std::nullopt) noexcept;

    // Sends the batch followed by this call, asking for a reply, and returns the call's sequence
    // number without waiting. Replies come in submission order; collect each with await().
    [[nodiscard]] std::expected<std::uint64_t, Error> submit(
        Method method, std::span<const std::byte> args, std::span<const std::byte> payload = {},
        std::optional<RegionBulk> region = std::nullopt) noexcept;

    // Waits for the reply to `sequence`, the oldest submitted call not yet awaited. Errors of
    // earlier asynchronous calls that arrive with it become the calling thread's last error. When
    // `payloadTarget` is given, an inline reply payload of exactly its size is copied there
    // (instead of into CallOutcome::payload); another size is Traits::kUnknown.
    [[nodiscard]] Outcome await(std::uint64_t sequence,
                                    std::optional<std::span<std::byte>> payloadTarget = std::nullopt) noexcept;

    // submit + await.
    [[nodiscard]] Outcome call(Method method, std::span<const std::byte> args,
                                   std::span<const std::byte> payload = {},
                                   std::optional<RegionBulk> region = std::nullopt) noexcept;

    // The data region, set up on first use (shm sessions only: null over TCP, or when it could not be
    // set up, which is logged once).
    [[nodiscard]] transport::DataRegion* region() noexcept;

    // Largest inline payload one call may carry on this session's channel (0 when not connected).
    [[nodiscard]] std::size_t maxPayloadBytes() noexcept;

    [[nodiscard]] const transport::TransportConfig& config() const noexcept { return m_client.m_config; }

   private:
    friend class SessionClient;
    explicit Session(SessionClient& client) : m_client(client), m_lock(client.m_mutex) {}
    SessionClient& m_client;
    std::unique_lock<std::mutex> m_lock;
  };

  [[nodiscard]] Session session() noexcept { return Session(*this); }

  // One-call conveniences (each takes the session for the call).
  [[nodiscard]] Error enqueue(Method method, std::span<const std::byte> args,
                                    std::span<const std::byte> payload = {}) noexcept;
  [[nodiscard]] Outcome call(Method method, std::span<const std::byte> args,
                                 std::span<const std::byte> payload = {}) noexcept;
  [[nodiscard]] std::size_t maxPayloadBytes() noexcept;

  // Pinned host memory carved from the data region (the worker has registered it: copies from and
  // to it are single DMAs). nullptr when this session has no region (TCP) or it is exhausted; the
  // caller then falls back to memory of its own.
  [[nodiscard]] void* allocateRegionHost(std::size_t bytes) noexcept;
  // True when `pointer` came from allocateRegionHost (it is then freed).
  bool freeRegionHost(void* pointer) noexcept;
  // Where [pointer, pointer + bytes) lies in the region's pinned memory, if it does. Takes no lock of
  // the client's, so it may be called before taking the session.
  [[nodiscard]] std::optional<RegionBulk> findRegionHost(const void* pointer, std::size_t bytes) const noexcept;

  // Sends what is batched and says Goodbye; later calls fail with Traits::kDevicesUnavailable.
  void close() noexcept;

  // Counts since the process started (any thread, no lock).
  [[nodiscard]] CallCounts counts() const noexcept;
  // Calls waited for, by method id (takes the client's mutex: not while holding a Session).
  [[nodiscard]] std::map<std::uint32_t, std::uint64_t> waitedByMethod() noexcept;

 private:
  SessionClient() = default;
  bool connectLocked() noexcept;
  Error flushLocked(bool wantsReply, std::span<const std::byte> lastPayload = {}) noexcept;
  Outcome brokenLocked(const std::string& why) noexcept;
  void drainLocked() noexcept;
  Outcome awaitLocked(std::uint64_t sequence, std::optional<std::span<std::byte>> payloadTarget) noexcept;
  void completeHandoffsLocked() noexcept;
  void startFlusherLocked() noexcept;

  struct Pending {
    std::uint64_t sequence;
    Method method;
    std::vector<std::byte> args;
    std::uint32_t segment;  // wire::INLINE_SEGMENT or a region segment; no bulk when length is 0
    std::uint64_t offset;   // into m_batchPayload (inline) or the segment
    std::uint64_t length;
  };
  void pushLocked(std::uint64_t sequence, Method method, std::span<const std::byte> args,
                  std::uint64_t inlineOffset, std::span<const std::byte> payload,
                  std::optional<RegionBulk> region);

  std::mutex m_mutex;
  bool m_tried = false;
  bool m_broken = false;
  std::unique_ptr<transport::Channel> m_channel;
  transport::TransportConfig m_config;
  std::uint64_t m_sessionId = 0;
  std::uint64_t m_nextSequence = 1;
  std::vector<Pending> m_batch;
  std::vector<std::byte> m_batchPayload;
  std::vector<std::uint64_t> m_awaiting;  // submitted, reply not yet received (in order)
  std::optional<std::span<std::byte>> m_payloadTarget;  // where await() wants the payload (TCP sink)
  std::vector<std::byte> m_sinkBuffer;                  // other payloads received over TCP
  // The data region: created once under m_mutex and never destroyed while the process runs (pinned
  // pointers handed to the application point into it), so findRegionHost reads it lock-free.
  bool m_regionTried = false;
  std::unique_ptr<transport::DataRegion> m_regionOwner;
  std::atomic<transport::DataRegion*> m_region{nullptr};
  std::shared_ptr<std::vector<std::uint32_t>> m_handoffs;  // segments acked, names not yet unlinked
  std::atomic<std::uint64_t> m_calls{0}, m_waited{0}, m_messages{0};
  std::chrono::steady_clock::time_point m_batchSince;  // when the batch's first call was queued
  std::condition_variable m_flushWake;                 // the flusher: a batch was started
  bool m_flusherStarted = false;
  bool m_flusherIdle = false;  // the flusher sleeps until a batch starts (notify only then: a wake is a syscall)
  std::map<std::uint32_t, std::uint64_t> m_waitedByMethod;  // guarded by m_mutex
};

}  // namespace flyt::interpose
