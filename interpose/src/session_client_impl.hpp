// The definitions of SessionClient<Traits> (session_client.hpp). Included by exactly one source
// file of each interposed library, which instantiates the library's one client:
//   template class flyt::interpose::SessionClient<MyTraits>;
#pragma once

#include <fmt/format.h>
#include <kj/exception.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <utility>

#include "session_client.hpp"
#include "session_open.hpp"
#include "flyt/transport/log.hpp"
#include "flyt/transport/region_protocol.hpp"

namespace flyt::interpose {
namespace client_detail {

// A batch is sent when it holds this many calls, even if nobody waits for it.
inline constexpr std::size_t kMaxBatchCalls = 256;
// ... or when its first call has waited this long: the worker starts on queued work while the
// application queues more (a batch held until the next synchronisation would leave the GPU idle
// for as long as the application takes to queue its work). Checked when a call is queued, and by
// the client's flusher thread for a batch that no later call comes to.
inline constexpr auto kBatchAge = std::chrono::microseconds(100);

inline spdlog::logger& log() { return flyt::logger("interpose"); }

}  // namespace client_detail

template <class Traits>
SessionClient<Traits>& SessionClient<Traits>::get() noexcept {
  // Leaked on purpose: CUDA calls may come from other libraries' destructors after ours ran.
  static SessionClient* const client = new SessionClient();
  return *client;
}

template <class Traits>
bool SessionClient<Traits>::connectLocked() noexcept {
  if (m_channel) return true;
  if (m_tried) return false;
  m_tried = true;
  auto session = openConfiguredSession(m_config, Traits::kApi);
  if (!session) {
    client_detail::log().error("{}", session.error().message);
    return false;
  }
  client_detail::log().info("session {:016x} on {} ({} API)", session->sessionId, session->endpoint,
                            Traits::kApi == transport::SessionApi::kDriver ? "driver" : "runtime");
  m_sessionId = session->sessionId;
  m_channel = std::move(session->channel);
  m_channel->setReceiveSpin(m_config.replySpin);
  // Over TCP a reply's payload (device-to-host data) is received straight into the buffer the
  // awaiting copy named, when it has the announced size; anything else into a buffer of ours.
  m_channel->setPayloadSink([this](capnp::MessageReader&, std::size_t bytes) -> transport::Result<std::span<std::byte>> {
    if (m_payloadTarget && m_payloadTarget->size() == bytes) return *m_payloadTarget;
    if (m_sinkBuffer.size() < bytes) m_sinkBuffer.resize(bytes);
    return std::span<std::byte>(m_sinkBuffer.data(), bytes);
  });
  // Registered after connecting, so that it runs before the transport's own statics (created while
  // connecting) are destroyed.
  std::atexit([] { SessionClient::get().close(); });
  return true;
}

template <class Traits>
std::size_t SessionClient<Traits>::maxPayloadBytes() noexcept { return session().maxPayloadBytes(); }

template <class Traits>
typename SessionClient<Traits>::Error SessionClient<Traits>::enqueue(Method method, std::span<const std::byte> args,
                            std::span<const std::byte> payload) noexcept {
  return session().enqueue(method, args, payload);
}

template <class Traits>
typename SessionClient<Traits>::Outcome SessionClient<Traits>::call(Method method, std::span<const std::byte> args,
                         std::span<const std::byte> payload) noexcept {
  return session().call(method, args, payload);
}

template <class Traits>
void SessionClient<Traits>::pushLocked(std::uint64_t sequence, Method method, std::span<const std::byte> args,
                        std::uint64_t inlineOffset, std::span<const std::byte> payload,
                        std::optional<RegionBulk> region) {
  Pending pending{sequence, method, {args.begin(), args.end()}, wire::INLINE_SEGMENT, inlineOffset, payload.size()};
  if (region) {
    pending.segment = region->segment;
    pending.offset = region->offset;
    pending.length = region->length;
  }
  if (m_batch.empty()) m_batchSince = std::chrono::steady_clock::now();
  m_batch.push_back(std::move(pending));
  m_calls.fetch_add(1, std::memory_order_relaxed);
}

// The flusher: sends a batch whose first call has waited kBatchAge when no later call came to send
// it. Started with the first queued call; lives as long as the process (the client is never
// destroyed) and sleeps while the batch is empty.
template <class Traits>
void SessionClient<Traits>::startFlusherLocked() noexcept {
  if (m_flusherStarted) return;
  m_flusherStarted = true;
  try {
    std::thread([this] {
      std::unique_lock lock(m_mutex);
      for (;;) {
        m_flusherIdle = true;
        m_flushWake.wait(lock, [&] { return !m_batch.empty(); });
        m_flusherIdle = false;
        const auto due = m_batchSince + client_detail::kBatchAge;
        if (std::chrono::steady_clock::now() < due) {
          m_flushWake.wait_until(lock, due);
          continue;  // look again: the batch may have been sent, or be a newer one
        }
        if (m_channel && !m_broken) (void)flushLocked(false);
      }
    }).detach();
  } catch (...) {
    // No thread: batches are sent when a later call comes or someone waits, as before.
  }
}

// Sends the batch. `lastPayload`, when not empty, is the inline payload of the batch's last call,
// sent from the caller's memory rather than copied into the batch (the common case of one large
// copy chunk).
template <class Traits>
typename SessionClient<Traits>::Error SessionClient<Traits>::flushLocked(bool wantsReply, std::span<const std::byte> lastPayload) noexcept {
  if (m_batch.empty()) return Traits::kSuccess;
  std::span<const std::byte> payload = m_batchPayload;
  if (!lastPayload.empty()) {
    if (m_batchPayload.empty()) {
      payload = lastPayload;
    } else {
      m_batchPayload.insert(m_batchPayload.end(), lastPayload.begin(), lastPayload.end());
      payload = m_batchPayload;
    }
  }
  auto sent = m_channel->send(
      [&](capnp::MessageBuilder& builder) {
        auto batch = builder.initRoot<wire::Envelope>().initBatch();
        batch.setWantsReply(wantsReply);
        auto calls = batch.initCalls(static_cast<unsigned>(m_batch.size()));
        for (unsigned i = 0; i < m_batch.size(); ++i) {
          const auto& pending = m_batch[i];
          calls[i].setSequence(pending.sequence);
          calls[i].setMethod(static_cast<std::uint32_t>(pending.method));
          calls[i].getArgs().setAs<capnp::Data>(kj::arrayPtr(
              reinterpret_cast<const capnp::byte*>(pending.args.data()), pending.args.size()));
          if (pending.length > 0) {
            auto ref = calls[i].initBulk(1)[0];
            ref.setSegment(pending.segment);
            ref.setOffset(pending.offset);
            ref.setLength(pending.length);
          }
        }
      },
      payload);
  m_batch.clear();
  m_batchPayload.clear();
  m_messages.fetch_add(1, std::memory_order_relaxed);
  if (!sent) {
    client_detail::log().error("session lost while sending: {}", sent.error().describe());
    m_broken = true;
    m_awaiting.clear();
    return Traits::kDevicesUnavailable;
  }
  return Traits::kSuccess;
}

template <class Traits>
typename SessionClient<Traits>::Outcome SessionClient<Traits>::brokenLocked(const std::string& why) noexcept {
  if (!m_broken) client_detail::log().error("session lost: {}", why);
  m_broken = true;
  m_awaiting.clear();
  return Outcome{Traits::kDevicesUnavailable, {}, {}, {}};
}

// Receives every reply still owed; their errors become the thread's last error.
template <class Traits>
void SessionClient<Traits>::drainLocked() noexcept {
  while (!m_awaiting.empty() && !m_broken) {
    const auto outcome = awaitLocked(m_awaiting.front(), std::nullopt);
    if (outcome.error != Traits::kSuccess) Traits::noteEarlierFailure(outcome.error);
  }
}

// ---- Session ------------------------------------------------------------------------------------

template <class Traits>
SessionClient<Traits>::Session::~Session() {
  if (m_lock.owns_lock()) m_client.drainLocked();
}

template <class Traits>
bool SessionClient<Traits>::Session::usable() noexcept { return !m_client.m_broken && m_client.connectLocked(); }

template <class Traits>
std::size_t SessionClient<Traits>::Session::maxPayloadBytes() noexcept {
  if (!usable()) return 0;
  return m_client.m_channel->maxPayloadBytes();
}

template <class Traits>
typename SessionClient<Traits>::Error SessionClient<Traits>::Session::enqueue(Method method, std::span<const std::byte> args,
                                     std::span<const std::byte> payload,
                                     std::optional<RegionBulk> region) noexcept {
  auto& c = m_client;
  if (!usable()) return Traits::kDevicesUnavailable;
  if (c.m_batch.size() >= client_detail::kMaxBatchCalls ||
      c.m_batchPayload.size() + payload.size() > c.m_channel->maxPayloadBytes()) {
    if (c.flushLocked(false) != Traits::kSuccess) return Traits::kDevicesUnavailable;
  }
  c.pushLocked(c.m_nextSequence++, method, args, c.m_batchPayload.size(), payload, region);
  c.m_batchPayload.insert(c.m_batchPayload.end(), payload.begin(), payload.end());
  if (std::chrono::steady_clock::now() - c.m_batchSince >= client_detail::kBatchAge) {
    if (c.flushLocked(false) != Traits::kSuccess) return Traits::kDevicesUnavailable;
  } else if (c.m_batch.size() == 1) {
    // A new batch that no later call may come to send: the flusher's. Only a queued call wakes it
    // (a waited one is sent at once), and only when it sleeps.
    c.startFlusherLocked();
    if (c.m_flusherIdle) c.m_flushWake.notify_one();
  }
  return Traits::kSuccess;
}

template <class Traits>
std::expected<std::uint64_t, typename SessionClient<Traits>::Error> SessionClient<Traits>::Session::submit(Method method,
                                                                  std::span<const std::byte> args,
                                                                  std::span<const std::byte> payload,
                                                                  std::optional<RegionBulk> region) noexcept {
  auto& c = m_client;
  if (!usable()) return std::unexpected(Traits::kDevicesUnavailable);
  if (c.m_batchPayload.size() + payload.size() > c.m_channel->maxPayloadBytes()) {
    if (c.flushLocked(false) != Traits::kSuccess) return std::unexpected(Traits::kDevicesUnavailable);
  }
  const std::uint64_t sequence = c.m_nextSequence++;
  c.pushLocked(sequence, method, args, c.m_batchPayload.size(), payload, region);
  if (c.flushLocked(true, payload) != Traits::kSuccess) return std::unexpected(Traits::kDevicesUnavailable);
  c.m_awaiting.push_back(sequence);
  c.m_waited.fetch_add(1, std::memory_order_relaxed);
  ++c.m_waitedByMethod[static_cast<std::uint32_t>(method)];
  return sequence;
}

template <class Traits>
typename SessionClient<Traits>::Outcome SessionClient<Traits>::Session::await(std::uint64_t sequence,
                                   std::optional<std::span<std::byte>> payloadTarget) noexcept {
  return m_client.awaitLocked(sequence, payloadTarget);
}

template <class Traits>
typename SessionClient<Traits>::Outcome SessionClient<Traits>::awaitLocked(std::uint64_t sequence, std::optional<std::span<std::byte>> payloadTarget) noexcept {
  auto& c = *this;
  if (c.m_broken) return Outcome{Traits::kDevicesUnavailable, {}, {}, {}};
  if (c.m_awaiting.empty() || c.m_awaiting.front() != sequence) {
    return Outcome{Traits::kUnknown, {}, {}, {}};  // a bug of ours: replies arrive in order
  }
  c.m_awaiting.erase(c.m_awaiting.begin());
  for (;;) {
    // A GPU call may legitimately run longer than the peer timeout; a dead peer is reported as
    // kDisconnected by the channel's liveness check, so only that ends the wait.
    c.m_payloadTarget = payloadTarget;
    auto incoming = c.m_channel->receive(c.m_config.peerTimeout);
    c.m_payloadTarget.reset();
    if (!incoming) {
      if (incoming.error().code == transport::Errc::kTimeout) continue;
      return c.brokenLocked(incoming.error().describe());
    }
    Outcome outcome{Traits::kDevicesUnavailable, {}, {}, {}};
    bool found = false;
    kj::Maybe<kj::Exception> problem = kj::runCatchingExceptions([&] {
      auto envelope = incoming->template root<wire::Envelope>();
      if (!envelope.isReply()) return;
      if (envelope.getReply().hasOutput()) {
        // Device printf, printed by the worker: to the application's stdout, through stdio, as
        // NVIDIA's runtime prints it.
        auto text = envelope.getReply().getOutput();
        std::fwrite(text.begin(), 1, text.size(), stdout);
      }
      for (auto result : envelope.getReply().getResults()) {
        const Error error = Traits::fromStatus(result.getStatus(), result.getCudaError());
        if (result.getStatus() != wire::TransportStatus::OK) {
          client_detail::log().warn("call #{} failed on the server: {}", result.getSequence(), result.getDetail().cStr());
        }
        if (result.getSequence() != sequence) {
          Traits::noteEarlierFailure(error);  // an earlier asynchronous call failed
          if (outcome.earlier == Traits::kSuccess) outcome.earlier = error;
          continue;
        }
        found = true;
        outcome.error = error;
        if (result.hasResults()) {
          auto bytes = result.getResults().template getAs<capnp::Data>();
          outcome.results.assign(reinterpret_cast<const std::byte*>(bytes.begin()),
                                 reinterpret_cast<const std::byte*>(bytes.end()));
        }
      }
    });
    if (problem != nullptr) return c.brokenLocked("undecodable reply");
    if (!found) return c.brokenLocked(fmt::format("the reply did not answer call #{}", sequence));
    const auto inlinePayload = incoming->payload();
    if (!payloadTarget) {
      outcome.payload.assign(inlinePayload.begin(), inlinePayload.end());
    } else if (outcome.error == Traits::kSuccess) {
      if (inlinePayload.size() != payloadTarget->size()) {
        outcome.error = Traits::kUnknown;
      } else if (!inlinePayload.empty() && inlinePayload.data() != payloadTarget->data()) {
        std::memcpy(payloadTarget->data(), inlinePayload.data(), inlinePayload.size());
      }
    }
    return outcome;
  }
}

template <class Traits>
typename SessionClient<Traits>::Outcome SessionClient<Traits>::Session::call(Method method, std::span<const std::byte> args,
                                  std::span<const std::byte> payload, std::optional<RegionBulk> region) noexcept {
  auto sequence = submit(method, args, payload, region);
  if (!sequence) return Outcome{sequence.error(), {}, {}, {}};
  return await(*sequence);
}

template <class Traits>
transport::DataRegion* SessionClient<Traits>::Session::region() noexcept {
  auto& c = m_client;
  if (c.m_regionTried) return c.m_region.load(std::memory_order_acquire);
  if (!usable()) return nullptr;
  c.m_regionTried = true;
  if (!c.m_channel->sharesHostMemory()) return nullptr;
  // Segments are announced from inside DataRegion (ring now, pinned memory on demand), always with
  // m_mutex held by whoever asked for them; the names are unlinked once the worker has mapped them.
  auto handoffs = std::make_shared<std::vector<std::uint32_t>>();
  transport::RegionOptions options;
  options.populate = true;
  options.onCreated = [&c, handoffs](const transport::SegmentView& segment) -> transport::Result<void> {
    if (c.flushLocked(false) != Traits::kSuccess) return transport::fail(transport::Errc::kDisconnected, "session lost");
    c.drainLocked();
    auto announced = transport::announceSegment(*c.m_channel, segment, c.m_config.connectTimeout);
    if (!announced) {
      // A broken channel breaks the session; a refusal (the worker could not register) does not.
      if (announced.error().code != transport::Errc::kUnavailable) c.brokenLocked(announced.error().describe());
      return announced;
    }
    handoffs->push_back(segment.id);
    return {};
  };
  auto made = transport::DataRegion::create(c.m_sessionId, c.m_config, std::move(options));
  if (!made) {
    client_detail::log().warn("no data region for this session ({}): copies travel inside messages, pinned memory is "
               "ordinary memory", made.error().describe());
    return nullptr;
  }
  c.m_regionOwner = std::move(*made);
  c.m_region.store(c.m_regionOwner.get(), std::memory_order_release);
  c.m_handoffs = std::move(handoffs);
  c.completeHandoffsLocked();
  return c.m_regionOwner.get();
}

// ---- pinned host memory in the region ----------------------------------------------------------

template <class Traits>
void SessionClient<Traits>::completeHandoffsLocked() noexcept {
  if (!m_handoffs || !m_regionOwner) return;
  for (const auto id : *m_handoffs) {
    if (auto done = m_regionOwner->handoffComplete(id); !done) {
      client_detail::log().warn("region segment {}: {}", id, done.error().describe());
    }
  }
  m_handoffs->clear();
}

template <class Traits>
void* SessionClient<Traits>::allocateRegionHost(std::size_t bytes) noexcept {
  auto held = session();
  auto* region = held.region();
  if (region == nullptr) return nullptr;
  auto memory = region->hostAllocator().allocate(bytes);
  completeHandoffsLocked();
  if (!memory) {
    client_detail::log().warn("pinned allocation of {} bytes outside the data region: {}", bytes, memory.error().describe());
    return nullptr;
  }
  return *memory;
}

template <class Traits>
bool SessionClient<Traits>::freeRegionHost(void* pointer) noexcept {
  auto* region = m_region.load(std::memory_order_acquire);
  if (region == nullptr || !region->hostAllocator().tryLookup(pointer, 0)) return false;
  return region->hostAllocator().free(pointer).has_value();
}

template <class Traits>
std::optional<RegionBulk> SessionClient<Traits>::findRegionHost(const void* pointer, std::size_t bytes) const noexcept {
  auto* region = m_region.load(std::memory_order_acquire);
  if (region == nullptr) return std::nullopt;
  auto ref = region->hostAllocator().tryLookup(pointer, bytes);
  if (!ref) return std::nullopt;
  return RegionBulk{ref->segment, ref->offset, bytes};
}

template <class Traits>
CallCounts SessionClient<Traits>::counts() const noexcept {
  return {m_calls.load(std::memory_order_relaxed), m_waited.load(std::memory_order_relaxed),
          m_messages.load(std::memory_order_relaxed)};
}

template <class Traits>
std::map<std::uint32_t, std::uint64_t> SessionClient<Traits>::waitedByMethod() noexcept {
  std::lock_guard lock(m_mutex);
  return m_waitedByMethod;
}

template <class Traits>
void SessionClient<Traits>::close() noexcept {
  auto held = session();
  if (!m_channel || m_broken) return;
  (void)flushLocked(false);
  drainLocked();
  (void)m_channel->send([](capnp::MessageBuilder& builder) {
    builder.initRoot<wire::Envelope>().initGoodbye().setReason("application exit");
  });
  m_broken = true;
}

}  // namespace flyt::interpose
