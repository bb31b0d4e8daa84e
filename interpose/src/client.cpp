#include "client.hpp"

#include <fmt/format.h>
#include <kj/exception.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <utility>

#include <unistd.h>

#include "flyt/transport/handshake.hpp"
#include "flyt/transport/log.hpp"
#include "flyt/transport/orchestrator_client.hpp"
#include "flyt/transport/region_protocol.hpp"
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
    case wire::TransportStatus::TIMEOUT:
    case wire::TransportStatus::BUSY: return cudaErrorDevicesUnavailable;  // BUSY answers only a Hello
  }
  return cudaErrorUnknown;
}

void leaveAtExit() { Client::get().close(); }

// FLYT_CONFIG names a client.toml ([transport], [cluster]); the FLYT_* variables override it.
transport::Result<std::pair<transport::TransportConfig, transport::ClusterClientConfig>> loadConfig() {
  const char* path = std::getenv("FLYT_CONFIG");
  std::optional<toml::table> file;
  transport::TransportConfig config;
  if (path != nullptr && *path != '\0') {
    auto table = transport::loadTomlFile(path);
    if (!table) return std::unexpected(table.error());
    auto fromFile = transport::transportConfigFromToml(*table, path);
    if (!fromFile) return std::unexpected(fromFile.error());
    config = *fromFile;
    file = std::move(*table);
  }
  auto withEnv = transport::applyTransportEnv(config);
  if (!withEnv) return std::unexpected(withEnv.error());
  auto cluster = transport::clusterClientConfig(file ? &*file : nullptr, path != nullptr ? path : "");
  if (!cluster) return std::unexpected(cluster.error());
  return std::pair{*withEnv, *cluster};
}

// Cluster mode: the orchestrator places the session and signs a grant, which the node checks;
// the endpoints it names are tried in order (shared memory first on the node's own host).
transport::Result<transport::OpenedSession> openGrantedSession(const transport::TransportConfig& config,
                                                               const transport::ClusterClientConfig& cluster) {
  const transport::SessionRequestInfo request{cluster.tenant, cluster.token, programName(),
                                              transport::hostIdentity(), static_cast<std::uint32_t>(::getpid())};
  auto placement = transport::requestPlacement(cluster.orchestrator, request, config.connectTimeout * 2);
  if (!placement) return std::unexpected(placement.error());
  log().info("orchestrator placed session {:016x} on node {} (GPU {}, {}% of its SMs, {} bytes)",
             placement->sessionId, placement->node, placement->gpuUuid, placement->smPercent,
             placement->memoryBytes);
  transport::Error last{transport::Errc::kUnavailable, "the orchestrator named no endpoint for the node"};
  for (const auto& endpoint : placement->endpoints) {
    auto session = transport::openSession(endpoint, config, programName(), placement->signedGrant,
                                          placement->sessionId);
    if (session) return session;
    last = session.error();
    last.message = fmt::format("node {} at {}: {}", placement->node, endpoint, last.message);
    log().info("{}", last.message);
  }
  return std::unexpected(last);
}

transport::Result<transport::OpenedSession> openConfiguredSession(transport::TransportConfig& config) {
  auto loaded = loadConfig();
  if (!loaded) {
    return transport::fail(loaded.error().code, fmt::format("bad configuration: {}", loaded.error().describe()));
  }
  config = loaded->first;
  if (loaded->second.enabled()) {
    auto session = openGrantedSession(config, loaded->second);
    if (!session) {
      return transport::fail(session.error().code,
                             fmt::format("no Flyt session from the orchestrator: {}", session.error().describe()));
    }
    return session;
  }
  const char* server = std::getenv("FLYT_SERVER");
  if (server == nullptr || *server == '\0') {
    return transport::fail(transport::Errc::kInvalidArgument,
                           "FLYT_SERVER is not set: start CUDA programs with `flyt run -- PROGRAM` (or set "
                           "FLYT_ORCHESTRATOR and FLYT_TENANT in a cluster)");
  }
  auto session = transport::openSession(server, config, programName());
  if (!session) {
    return transport::fail(session.error().code,
                           fmt::format("cannot reach the Flyt server {}: {}", server, session.error().describe()));
  }
  return session;
}

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
  auto session = openConfiguredSession(m_config);
  if (!session) {
    log().error("{}", session.error().message);
    return false;
  }
  log().info("session {:016x} on {}", session->sessionId, session->endpoint);
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
  std::atexit(leaveAtExit);
  return true;
}

std::size_t Client::maxPayloadBytes() noexcept { return session().maxPayloadBytes(); }

cudaError_t Client::enqueue(api::Method method, std::span<const std::byte> args,
                            std::span<const std::byte> payload) noexcept {
  return session().enqueue(method, args, payload);
}

CallOutcome Client::call(api::Method method, std::span<const std::byte> args,
                         std::span<const std::byte> payload) noexcept {
  return session().call(method, args, payload);
}

void Client::pushLocked(std::uint64_t sequence, api::Method method, std::span<const std::byte> args,
                        std::uint64_t inlineOffset, std::span<const std::byte> payload,
                        std::optional<RegionBulk> region) {
  Pending pending{sequence, method, {args.begin(), args.end()}, wire::INLINE_SEGMENT, inlineOffset, payload.size()};
  if (region) {
    pending.segment = region->segment;
    pending.offset = region->offset;
    pending.length = region->length;
  }
  m_batch.push_back(std::move(pending));
}

// Sends the batch. `lastPayload`, when not empty, is the inline payload of the batch's last call,
// sent from the caller's memory rather than copied into the batch (the common case of one large
// copy chunk).
cudaError_t Client::flushLocked(bool wantsReply, std::span<const std::byte> lastPayload) noexcept {
  if (m_batch.empty()) return cudaSuccess;
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
  if (!sent) {
    log().error("session lost while sending: {}", sent.error().describe());
    m_broken = true;
    m_awaiting.clear();
    return cudaErrorDevicesUnavailable;
  }
  return cudaSuccess;
}

CallOutcome Client::brokenLocked(const std::string& why) noexcept {
  if (!m_broken) log().error("session lost: {}", why);
  m_broken = true;
  m_awaiting.clear();
  return CallOutcome{cudaErrorDevicesUnavailable, {}, {}};
}

// Receives every reply still owed; their errors become the thread's last error.
void Client::drainLocked() noexcept {
  while (!m_awaiting.empty() && !m_broken) {
    const auto outcome = awaitLocked(m_awaiting.front(), std::nullopt);
    if (outcome.error != cudaSuccess) setLastError(outcome.error);
  }
}

// ---- Session ------------------------------------------------------------------------------------

Client::Session::~Session() {
  if (m_lock.owns_lock()) m_client.drainLocked();
}

bool Client::Session::usable() noexcept { return !m_client.m_broken && m_client.connectLocked(); }

std::size_t Client::Session::maxPayloadBytes() noexcept {
  if (!usable()) return 0;
  return m_client.m_channel->maxPayloadBytes();
}

cudaError_t Client::Session::enqueue(api::Method method, std::span<const std::byte> args,
                                     std::span<const std::byte> payload,
                                     std::optional<RegionBulk> region) noexcept {
  auto& c = m_client;
  if (!usable()) return cudaErrorDevicesUnavailable;
  if (c.m_batch.size() >= kMaxBatchCalls ||
      c.m_batchPayload.size() + payload.size() > c.m_channel->maxPayloadBytes()) {
    if (c.flushLocked(false) != cudaSuccess) return cudaErrorDevicesUnavailable;
  }
  c.pushLocked(c.m_nextSequence++, method, args, c.m_batchPayload.size(), payload, region);
  c.m_batchPayload.insert(c.m_batchPayload.end(), payload.begin(), payload.end());
  return cudaSuccess;
}

std::expected<std::uint64_t, cudaError_t> Client::Session::submit(api::Method method,
                                                                  std::span<const std::byte> args,
                                                                  std::span<const std::byte> payload,
                                                                  std::optional<RegionBulk> region) noexcept {
  auto& c = m_client;
  if (!usable()) return std::unexpected(cudaErrorDevicesUnavailable);
  if (c.m_batchPayload.size() + payload.size() > c.m_channel->maxPayloadBytes()) {
    if (c.flushLocked(false) != cudaSuccess) return std::unexpected(cudaErrorDevicesUnavailable);
  }
  const std::uint64_t sequence = c.m_nextSequence++;
  c.pushLocked(sequence, method, args, c.m_batchPayload.size(), payload, region);
  if (c.flushLocked(true, payload) != cudaSuccess) return std::unexpected(cudaErrorDevicesUnavailable);
  c.m_awaiting.push_back(sequence);
  return sequence;
}

CallOutcome Client::Session::await(std::uint64_t sequence,
                                   std::optional<std::span<std::byte>> payloadTarget) noexcept {
  return m_client.awaitLocked(sequence, payloadTarget);
}

CallOutcome Client::awaitLocked(std::uint64_t sequence, std::optional<std::span<std::byte>> payloadTarget) noexcept {
  auto& c = *this;
  if (c.m_broken) return CallOutcome{cudaErrorDevicesUnavailable, {}, {}};
  if (c.m_awaiting.empty() || c.m_awaiting.front() != sequence) {
    return CallOutcome{cudaErrorUnknown, {}, {}};  // a bug of ours: replies arrive in order
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
          if (outcome.earlier == cudaSuccess) outcome.earlier = error;
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
    });
    if (problem != nullptr) return c.brokenLocked("undecodable reply");
    if (!found) return c.brokenLocked(fmt::format("the reply did not answer call #{}", sequence));
    const auto inlinePayload = incoming->payload();
    if (!payloadTarget) {
      outcome.payload.assign(inlinePayload.begin(), inlinePayload.end());
    } else if (outcome.error == cudaSuccess) {
      if (inlinePayload.size() != payloadTarget->size()) {
        outcome.error = cudaErrorUnknown;
      } else if (!inlinePayload.empty() && inlinePayload.data() != payloadTarget->data()) {
        std::memcpy(payloadTarget->data(), inlinePayload.data(), inlinePayload.size());
      }
    }
    return outcome;
  }
}

CallOutcome Client::Session::call(api::Method method, std::span<const std::byte> args,
                                  std::span<const std::byte> payload, std::optional<RegionBulk> region) noexcept {
  auto sequence = submit(method, args, payload, region);
  if (!sequence) return CallOutcome{sequence.error(), {}, {}};
  return await(*sequence);
}

transport::DataRegion* Client::Session::region() noexcept {
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
    if (c.flushLocked(false) != cudaSuccess) return transport::fail(transport::Errc::kDisconnected, "session lost");
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
    log().warn("no data region for this session ({}): copies travel inside messages, pinned memory is "
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

void Client::completeHandoffsLocked() noexcept {
  if (!m_handoffs || !m_regionOwner) return;
  for (const auto id : *m_handoffs) {
    if (auto done = m_regionOwner->handoffComplete(id); !done) {
      log().warn("region segment {}: {}", id, done.error().describe());
    }
  }
  m_handoffs->clear();
}

void* Client::allocateRegionHost(std::size_t bytes) noexcept {
  auto held = session();
  auto* region = held.region();
  if (region == nullptr) return nullptr;
  auto memory = region->hostAllocator().allocate(bytes);
  completeHandoffsLocked();
  if (!memory) {
    log().warn("pinned allocation of {} bytes outside the data region: {}", bytes, memory.error().describe());
    return nullptr;
  }
  return *memory;
}

bool Client::freeRegionHost(void* pointer) noexcept {
  auto* region = m_region.load(std::memory_order_acquire);
  if (region == nullptr || !region->hostAllocator().tryLookup(pointer, 0)) return false;
  return region->hostAllocator().free(pointer).has_value();
}

std::optional<RegionBulk> Client::findRegionHost(const void* pointer, std::size_t bytes) const noexcept {
  auto* region = m_region.load(std::memory_order_acquire);
  if (region == nullptr) return std::nullopt;
  auto ref = region->hostAllocator().tryLookup(pointer, bytes);
  if (!ref) return std::nullopt;
  return RegionBulk{ref->segment, ref->offset, bytes};
}

void Client::close() noexcept {
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
