// ShmChannel: the same-host Channel, carried by Eclipse iceoryx 2.0 shared memory.
//
// Every session (one connectShm) gets its own pair of iceoryx publish/subscribe services,
// ("flyt", <endpoint name>, "c2s.<session id>") and ("flyt", <endpoint name>, "s2c.<session id>").
// Session set-up and peer liveness travel over an abstract-namespace unix socket named after the
// endpoint; it carries no messages after set-up. See shm_channel.cpp for the reasons behind these
// choices and shm_chunk.hpp for the chunk format.
//
// iceoryx 2.0 needs one RouDi daemon per host. A process that may host it (flyt-node, tests) calls
// EmbeddedRouDi::startIfAbsent; every other process only attaches to the RouDi that runs. Nothing in
// this header aborts the process or blocks without a bound when no RouDi runs: such calls fail with
// Errc::kUnavailable.
//
// Known limitation (iceoryx 2.0): its port locks are not robust mutexes. A process SIGKILLed while
// inside an iceoryx publish or loan keeps its port's lock held forever. ShmChannel itself stays safe:
// once a session's peer has died without closing the session, that session's ports are never touched
// again; they stay leaked (two ports, counted against RouDi's port limits) until this process exits.
// RouDi, however, blocks for good when it reclaims the dead process's ports. Existing sessions keep
// working, but new shm sessions on that host cannot register their ports: iceoryx 2.0 asks RouDi
// over its IPC socket with no time bound. Flyt's embedded RouDi touches a heartbeat file every cycle,
// and registration and port creation fail with kUnavailable once it is 3 s old (embedded_roudi.cpp);
// a RouDi that gets stuck between that check and the request still blocks the request. Restarting
// the process that hosts RouDi clears it. The plan to remove the limitation: carry messages in a Flyt-owned SPSC
// ring with robust (or lock-free) synchronisation in the memfd control block, or move to an iceoryx
// release with robust port locks.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "flyt/transport/channel.hpp"
#include "flyt/transport/config.hpp"
#include "flyt/transport/endpoint.hpp"

namespace flyt::transport {

// One mempool of the RouDi that EmbeddedRouDi starts: `count` chunks of `bytes` usable bytes each,
// of which one session holds at most `window` per direction (chunks sent and not yet released by
// the receiver; the sender waits for more).
struct ShmChunkClass {
  std::uint32_t bytes;
  std::uint32_t count;
  std::uint32_t window;
};

// The mempools an embedded RouDi configures for `config`, smallest first, each sized so that
// S = config.shmSessions sessions holding their full windows in both directions fit (count =
// 2 x window x S, never below the floor):
//   4 KiB,   window 32, floor 2048   calls, batches of calls and replies (almost all traffic);
//   64 KiB,  window 4,  floor 256    large batches, replies with small inline payloads;
//   min(shmInlinePayloadBytes, 256 KiB) + 64 KiB, window 2   inline copies below the staging
//            threshold (256 KiB) and their replies;
//   shmInlinePayloadBytes + 64 KiB, window 1   the largest inline payloads (no data region).
// A message plus payload that fits none of them is refused with kTooLarge; bulk data belongs in the
// DataRegion. With the defaults (S = 64, 1 MiB inline) about 265 MiB of /dev/shm, mapped sparsely:
// pages are used as chunks are first touched.
[[nodiscard]] std::vector<ShmChunkClass> shmChunkClasses(const TransportConfig& config);

// The /dev/shm bytes of those pools (chunk headers included).
[[nodiscard]] std::uint64_t shmPoolBytes(const TransportConfig& config);

// True when an iceoryx RouDi accepts connections on this host right now. Never blocks: it tries to
// connect to RouDi's unix datagram socket once.
[[nodiscard]] bool rouDiReachable();

// An in-process RouDi, started only when none runs on this host.
//
// Lifetime: construct it before, and destroy it after, every ShmChannel and Listener of this
// process (RouDi's destructor invalidates the process's iceoryx pointers). At most one owning
// instance exists per process; further startIfAbsent calls return a non-owning instance.
// Destroying the owning instance stops RouDi (no process can register or open ports any more);
// while live processes other than this one still hold ports in it, its shared memory is left to
// them rather than destroyed, and freed by the next RouDi of the host. Thread-safe.
class EmbeddedRouDi {
 public:
  // Starts RouDi with shmChunkClasses(config) unless one already runs (in this process or another),
  // in which case the result does not own it (owns() == false) and destroying it stops nothing.
  // Fails with kUnavailable (never aborts) if RouDi's shared memory cannot be created or RouDi does
  // not accept connections within config.connectTimeout.
  [[nodiscard]] static Result<std::unique_ptr<EmbeddedRouDi>> startIfAbsent(
      const TransportConfig& config);

  ~EmbeddedRouDi();
  EmbeddedRouDi(const EmbeddedRouDi&) = delete;
  EmbeddedRouDi& operator=(const EmbeddedRouDi&) = delete;

  // Whether this instance started (and will stop) the host's RouDi.
  [[nodiscard]] bool owns() const noexcept { return m_impl != nullptr; }

  struct Impl;

 private:
  explicit EmbeddedRouDi(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> m_impl;
};

// How long exit handlers get when iceoryx's exit-time deregistration may hang (its wait for RouDi
// has no bound): then endProcessWithin ends the process anyway.
inline constexpr std::chrono::milliseconds kExitGrace{2000};

// Starts a detached thread that, `grace` from now, flushes stdio and ends this process with
// `status` (std::_Exit), whatever its exit handlers are still doing. Processes registered with
// RouDi call it on their way out when RouDi may not answer (the transport does so itself for a
// RouDi that is gone or stuck, or a session whose peer died; see ensureRuntime).
void endProcessWithin(std::chrono::milliseconds grace, int status);

// Listens on `ep` (kind kShm) for sessions from any process on this host. Registers this process
// with RouDi on first use. Fails with kUnavailable if no RouDi runs or another process already
// listens on the same name, kInvalidArgument for a non-shm endpoint.
[[nodiscard]] Result<std::unique_ptr<Listener>> listenShm(const Endpoint& ep,
                                                          const TransportConfig& config);

// Opens a session with the listener on `ep`, within config.connectTimeout: kUnavailable when no
// RouDi runs or nobody listens on the name, kTimeout when the listener does not complete set-up in
// time. The channel's maxPayloadBytes() is config.shmInlinePayloadBytes.
[[nodiscard]] Result<std::unique_ptr<Channel>> connectShm(const Endpoint& ep,
                                                          const TransportConfig& config);

}  // namespace flyt::transport
