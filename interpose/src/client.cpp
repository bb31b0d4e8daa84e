#include "client.hpp"

#include <fmt/format.h>
#include <kj/exception.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "flyt/transport/handshake.hpp"
#include "flyt/transport/log.hpp"
#include "flyt/wire/session.capnp.h"

namespace flyt::interpose {
namespace {

// A batch is sent when it holds this many calls, even if nobody waits for it.
constexpr std::size_t kMaxBatchCalls = 256;

thread_local cudaError_t t_lastError = cudaSuccess;

spdlog::logger& log() { return flyt::logger("interpose"); }

std::string programName() {
  std::ifstream comm("/proc/self/comm");
  std::string name;
  std::getline(comm, name);
  return name.empty() ? "cuda-app" : name;
}

cudaError_t fromStatus(wire::TransportStatus status, cudaError_t verbatim) {
  switch (status) {
    case wire::TransportStatus::OK: return verbatim;
    case wire::TransportStatus::UNSUPPORTED: return cudaErrorNotSupported;
    case wire::TransportStatus::MALFORMED: return cudaErrorInvalidValue;
    case wire::TransportStatus::DISCONNECTED:
    case wire::TransportStatus::TIMEOUT: return cudaErrorDevicesUnavailable;
  }
  return cudaErrorUnknown;
}

void leaveAtExit() { Client::get().close(); }

}  // namespace

void setLastError(cudaError_t error) noexcept { t_lastError = error; }

cudaError_t lastError(bool reset) noexcept {
  const cudaError_t error = t_lastError;
  if (reset) t_lastError = cudaSuccess;
  return error;
}

Client& Client::get() noexcept {
  // Leaked on purpose: CUDA calls may come from other libraries' destructors after ours ran.
  static Client* const client = new Client();
  return *client;
}

bool Client::connectLocked() noexcept {
  if (m_channel) return true;
  if (m_tried) return false;
  m_tried = true;
  auto config = transport::transportConfigFromEnv();
  if (!config) {
    log().error("bad configuration: {}", config.error().describe());
    return false;
  }
  m_config = *config;
  const char* server = std::getenv("FLYT_SERVER");
  if (server == nullptr || *server == '\0') {
    log().error("FLYT_SERVER is not set: start CUDA programs with `flyt run -- PROGRAM`");
    return false;
  }
  auto session = transport::openSession(server, m_config, programName());
  if (!session) {
    log().error("cannot reach the Flyt server {}: {}", server, session.error().describe());
    return false;
  }
  log().info("session {:016x} on {}", session->sessionId, session->endpoint);
  m_channel = std::move(session->channel);
  // Registered after connecting, so that it runs before the transport's own statics (created while
  // connecting) are destroyed.
  std::atexit(leaveAtExit);
  return true;
}

std::size_t Client::maxPayloadBytes() noexcept {
  std::lock_guard lock(m_mutex);
  if (!connectLocked()) return 0;
  return m_channel->maxPayloadBytes();
}

cudaError_t Client::flushLocked(bool wantsReply) noexcept {
  if (m_batch.empty()) return cudaSuccess;
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
          if (pending.payloadBytes > 0) {
            auto ref = calls[i].initBulk(1)[0];
            ref.setSegment(wire::INLINE_SEGMENT);
            ref.setOffset(pending.payloadOffset);
            ref.setLength(pending.payloadBytes);
          }
        }
      },
      m_batchPayload);
  m_batch.clear();
  m_batchPayload.clear();
  if (!sent) {
    log().error("session lost while sending: {}", sent.error().describe());
    m_broken = true;
    return cudaErrorDevicesUnavailable;
  }
  return cudaSuccess;
}

CallOutcome Client::brokenLocked(const std::string& why) noexcept {
  if (!m_broken) log().error("session lost: {}", why);
  m_broken = true;
  return CallOutcome{cudaErrorDevicesUnavailable, {}, {}};
}

cudaError_t Client::enqueue(api::Method method, std::span<const std::byte> args,
                            std::span<const std::byte> payload) noexcept {
  std::lock_guard lock(m_mutex);
  if (m_broken || !connectLocked()) return cudaErrorDevicesUnavailable;
  if (m_batch.size() >= kMaxBatchCalls ||
      m_batchPayload.size() + payload.size() > m_channel->maxPayloadBytes()) {
    if (flushLocked(false) != cudaSuccess) return cudaErrorDevicesUnavailable;
  }
  m_batch.push_back(Pending{m_nextSequence++, method, {args.begin(), args.end()},
                            m_batchPayload.size(), payload.size()});
  m_batchPayload.insert(m_batchPayload.end(), payload.begin(), payload.end());
  return cudaSuccess;
}

CallOutcome Client::call(api::Method method, std::span<const std::byte> args,
                         std::span<const std::byte> payload) noexcept {
  std::lock_guard lock(m_mutex);
  if (m_broken || !connectLocked()) return CallOutcome{cudaErrorDevicesUnavailable, {}, {}};
  if (m_batchPayload.size() + payload.size() > m_channel->maxPayloadBytes()) {
    if (flushLocked(false) != cudaSuccess) return CallOutcome{cudaErrorDevicesUnavailable, {}, {}};
  }
  const std::uint64_t sequence = m_nextSequence++;
  m_batch.push_back(Pending{sequence, method, {args.begin(), args.end()}, m_batchPayload.size(),
                            payload.size()});
  m_batchPayload.insert(m_batchPayload.end(), payload.begin(), payload.end());
  if (flushLocked(true) != cudaSuccess) return CallOutcome{cudaErrorDevicesUnavailable, {}, {}};

  for (;;) {
    // A GPU call may legitimately run longer than the peer timeout; a dead peer is reported as
    // kDisconnected by the channel's liveness check, so only that ends the wait.
    auto incoming = m_channel->receive(m_config.peerTimeout);
    if (!incoming) {
      if (incoming.error().code == transport::Errc::kTimeout) continue;
      return brokenLocked(incoming.error().describe());
    }
    CallOutcome outcome{cudaErrorDevicesUnavailable, {}, {}};
    bool found = false;
    kj::Maybe<kj::Exception> problem = kj::runCatchingExceptions([&] {
      auto envelope = incoming->root<wire::Envelope>();
      if (!envelope.isReply()) return;
      if (envelope.getReply().hasOutput()) {
        // Device printf, printed by the worker: to the application's stdout, through stdio, as
        // NVIDIA's runtime prints it.
        auto text = envelope.getReply().getOutput();
        std::fwrite(text.begin(), 1, text.size(), stdout);
      }
      for (auto result : envelope.getReply().getResults()) {
        const auto error = fromStatus(result.getStatus(), static_cast<cudaError_t>(result.getCudaError()));
        if (result.getStatus() != wire::TransportStatus::OK) {
          log().warn("call #{} failed on the server: {}", result.getSequence(), result.getDetail().cStr());
        }
        if (result.getSequence() != sequence) {
          setLastError(error);  // an earlier asynchronous call failed
          continue;
        }
        found = true;
        outcome.error = error;
        if (result.hasResults()) {
          auto bytes = result.getResults().getAs<capnp::Data>();
          outcome.results.assign(reinterpret_cast<const std::byte*>(bytes.begin()),
                                 reinterpret_cast<const std::byte*>(bytes.end()));
        }
      }
      const auto inlinePayload = incoming->payload();
      outcome.payload.assign(inlinePayload.begin(), inlinePayload.end());
    });
    if (problem != nullptr) return brokenLocked("undecodable reply");
    if (!found) return brokenLocked(fmt::format("the reply did not answer call #{}", sequence));
    return outcome;
  }
}

void Client::close() noexcept {
  std::lock_guard lock(m_mutex);
  if (!m_channel || m_broken) return;
  (void)flushLocked(false);
  (void)m_channel->send([](capnp::MessageBuilder& builder) {
    builder.initRoot<wire::Envelope>().initGoodbye().setReason("application exit");
  });
  m_broken = true;
}

}  // namespace flyt::interpose
