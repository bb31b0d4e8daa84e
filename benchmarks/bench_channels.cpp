#include "bench_channels.hpp"

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <unistd.h>
#include <vector>

#include "flyt/transport/data_region.hpp"
#include "flyt/transport/handshake.hpp"
#include "flyt/transport/loopback_channel.hpp"
#include "flyt/transport/shm_channel.hpp"
#include "flyt/transport/tcp_channel.hpp"
#include "flyt/transport/transport.hpp"
#include "flyt/wire/session.capnp.h"
#include "raw_socket.hpp"

namespace flyt::bench {
namespace {

using namespace std::chrono_literals;
using transport::Channel;
using transport::Result;

constexpr auto kWait = 5s;

// A server end on its own thread. `handle` answers one message; the loop ends when the client end
// goes away or stop() is called.
class ServerThread {
 public:
  using Handler = std::function<void(Channel&, transport::Incoming&)>;

  ServerThread(std::unique_ptr<Channel> channel, Handler handle)
      : m_channel(std::move(channel)), m_thread([this, handle = std::move(handle)] {
          while (!m_stop.load(std::memory_order_relaxed)) {
            auto in = m_channel->receive(100ms);
            if (!in) {
              if (in.error().code == transport::Errc::kTimeout) continue;
              return;
            }
            handle(*m_channel, *in);
          }
        }) {}
  ~ServerThread() {
    m_stop = true;
    m_thread.join();
  }

 private:
  std::unique_ptr<Channel> m_channel;
  std::atomic<bool> m_stop{false};
  std::thread m_thread;
};

void sendReply(Channel& channel, std::uint64_t sequence) {
  (void)channel.send([&](capnp::MessageBuilder& builder) {
    auto results = builder.initRoot<wire::Envelope>().initReply().initResults(1);
    results[0].setSequence(sequence);
  });
}

void echo(Channel& channel, transport::Incoming& in) {
  auto envelope = in.root<wire::Envelope>();
  std::uint64_t sequence = 0;
  if (envelope.isBatch() && envelope.getBatch().getCalls().size() > 0) {
    sequence = envelope.getBatch().getCalls()[0].getSequence();
  }
  sendReply(channel, sequence);
}

Result<void> sendCall(Channel& channel, std::uint64_t sequence, std::span<const std::byte> payload,
                      const wire::BulkRef::Reader* ref = nullptr) {
  return channel.send(
      [&](capnp::MessageBuilder& builder) {
        auto batch = builder.initRoot<wire::Envelope>().initBatch();
        batch.setWantsReply(true);
        auto call = batch.initCalls(1)[0];
        call.setSequence(sequence);
        if (ref != nullptr) call.initBulk(1).setWithCaveats(0, *ref);
      },
      payload);
}

// A client channel with an echoing server behind it, for one transport kind.
struct Link {
  std::unique_ptr<Channel> client;
  std::unique_ptr<ServerThread> server;
};

std::unique_ptr<transport::EmbeddedRouDi>& rouDi() {
  static std::unique_ptr<transport::EmbeddedRouDi> instance;
  return instance;
}

// `prepare` runs on the server end before its thread starts (e.g. to install a payload sink).
Result<Link> makeLink(std::string_view kind, ServerThread::Handler handle,
                      const std::function<void(Channel&)>& prepare = {}) {
  transport::TransportConfig config;
  if (kind == "inproc") {
    auto [client, server] = transport::makeLoopbackPair(config);
    if (prepare) prepare(*server);
    return Link{std::move(client), std::make_unique<ServerThread>(std::move(server), handle)};
  }
  auto endpoint = transport::Endpoint::parse(
      kind == "tcp" ? std::string("tcp://127.0.0.1:0")
                    : fmt::format("shm://flyt-bench-{}", ::getpid()));
  if (!endpoint) return std::unexpected(endpoint.error());
  if (kind == "shm" && !rouDi()) {
    auto started = transport::EmbeddedRouDi::startIfAbsent(config);
    if (!started) return std::unexpected(started.error());
    rouDi() = std::move(*started);
  }
  auto listener = transport::listen(*endpoint, config);
  if (!listener) return std::unexpected(listener.error());
  auto target = transport::Endpoint::parse((*listener)->endpoint());
  if (!target) return std::unexpected(target.error());
  Result<std::unique_ptr<Channel>> client = std::unexpected(transport::Error{});
  std::thread connecting([&] { client = transport::connect(*target, config); });
  auto server = (*listener)->accept(kWait);
  connecting.join();
  if (!client) return std::unexpected(client.error());
  if (!server) return std::unexpected(server.error());
  if (prepare) prepare(**server);
  return Link{std::move(*client), std::make_unique<ServerThread>(std::move(*server), handle)};
}

std::vector<std::byte> touchedBuffer(std::size_t bytes) {
  std::vector<std::byte> buffer(bytes);
  for (std::size_t i = 0; i < bytes; i += 4096) buffer[i] = std::byte(i >> 12);
  return buffer;
}

// ---- RoundTrip --------------------------------------------------------------------------------

void roundTripChannel(benchmark::State& state, std::string kind) {
  auto link = makeLink(kind, echo);
  if (!link) return state.SkipWithError(link.error().describe().c_str());
  std::uint64_t sequence = 0;
  for (auto _ : state) {
    if (!sendCall(*link->client, ++sequence, {})) return state.SkipWithError("send failed");
    auto reply = link->client->receive(kWait);
    if (!reply) return state.SkipWithError(reply.error().describe().c_str());
  }
}

void roundTripRawTcp(benchmark::State& state) {
  auto pair = connectedLoopbackPair();
  if (!pair) return state.SkipWithError(pair.error().describe().c_str());
  std::thread server([fd = pair->server] {
    std::byte byte{};
    while (readAll(fd, &byte, 1) && writeAll(fd, &byte, 1)) {
    }
  });
  std::byte byte{1};
  for (auto _ : state) {
    if (!writeAll(pair->client, &byte, 1) || !readAll(pair->client, &byte, 1)) {
      state.SkipWithError("raw socket failed");
      break;
    }
  }
  ::close(pair->client);
  server.join();
  ::close(pair->server);
}

// ---- Payload ----------------------------------------------------------------------------------

// The server receives each payload into one preallocated buffer, as a node receives into its
// registered staging memory (TcpChannel's payload sink), so page faults are not measured.
void payloadChannel(benchmark::State& state, std::string kind) {
  const auto bytes = std::size_t(state.range(0));
  auto staging = std::make_shared<std::vector<std::byte>>(touchedBuffer(bytes));
  auto link = makeLink(kind, echo, [staging](Channel& server) {
    if (auto* tcp = dynamic_cast<transport::TcpChannel*>(&server)) {
      tcp->setPayloadSink([staging](capnp::MessageReader&, std::size_t length)
                              -> Result<std::span<std::byte>> {
        return std::span<std::byte>(*staging).first(std::min(length, staging->size()));
      });
    }
  });
  if (!link) return state.SkipWithError(link.error().describe().c_str());
  const auto data = touchedBuffer(bytes);
  std::uint64_t sequence = 0;
  for (auto _ : state) {
    auto sent = sendCall(*link->client, ++sequence, data);
    if (!sent) return state.SkipWithError(sent.error().describe().c_str());
    auto reply = link->client->receive(kWait);
    if (!reply) return state.SkipWithError(reply.error().describe().c_str());
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(bytes));
}

void payloadRawSocket(benchmark::State& state) {
  const auto bytes = std::size_t(state.range(0));
  auto pair = connectedLoopbackPair();
  if (!pair) return state.SkipWithError(pair.error().describe().c_str());
  std::thread server([fd = pair->server, bytes] {
    auto sink = touchedBuffer(bytes);
    std::byte ack{1};
    while (readAll(fd, sink.data(), bytes) && writeAll(fd, &ack, 1)) {
    }
  });
  const auto data = touchedBuffer(bytes);
  for (auto _ : state) {
    std::byte ack{};
    if (!writeAll(pair->client, data.data(), bytes) || !readAll(pair->client, &ack, 1)) {
      state.SkipWithError("raw socket failed");
      break;
    }
  }
  ::close(pair->client);
  server.join();
  ::close(pair->server);
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(bytes));
}

// ---- Region -----------------------------------------------------------------------------------

// Stages `bytes` through the data region's slot ring over the shm channel, pipelined: the client
// copies into slot k+1 while the server holds slot k. Each slot travels as a BulkRef; the server
// resolves it (bounds-checked) and acknowledges; the acknowledgement frees the slot. With
// `readOut`, the server also copies each slot out (a CPU consumer); without it, the server leaves
// the bytes where they are, as on a GPU node, where the copy engine reads registered slots by DMA.
void regionRing(benchmark::State& state, bool readOut) {
  const auto bytes = std::size_t(state.range(0));
  transport::TransportConfig config;
  auto region = transport::DataRegion::create(transport::newSessionId(), config);
  if (!region) return state.SkipWithError(region.error().describe().c_str());
  auto attached = std::make_shared<transport::AttachedRegion>((*region)->sessionId(),
                                                              transport::AttachOptions{});
  for (const auto& info : (*region)->segments()) {
    auto mapped = attached->attachSegment(info);
    if (!mapped) return state.SkipWithError(mapped.error().describe().c_str());
    (void)(*region)->handoffComplete(info.id);
  }
  auto sink = readOut ? touchedBuffer(config.regionSlotBytes) : std::vector<std::byte>{};
  auto link = makeLink("shm", [attached, readOut, &sink](Channel& channel, transport::Incoming& in) {
    auto call = in.root<wire::Envelope>().getBatch().getCalls()[0];
    auto ref = call.getBulk()[0];
    auto span = attached->resolve(ref.getSegment(), ref.getOffset(), ref.getLength());
    if (span && readOut) std::memcpy(sink.data(), span->data(), span->size());
    sendReply(channel, call.getSequence());
  });
  if (!link) return state.SkipWithError(link.error().describe().c_str());

  auto& ring = (*region)->ring();
  std::atomic<std::uint64_t> acked{0};
  std::atomic<bool> failed{false};
  std::thread acks([&] {
    while (!failed) {
      auto reply = link->client->receive(200ms);
      if (!reply) {
        if (reply.error().code == transport::Errc::kTimeout) continue;
        failed = true;
        acked.fetch_add(0);
        acked.notify_all();
        return;
      }
      const auto slot = reply->root<wire::Envelope>().getReply().getResults()[0].getSequence();
      (void)ring.release(std::uint32_t(slot));
      acked.fetch_add(1, std::memory_order_release);
      acked.notify_all();
    }
  });
  const auto data = touchedBuffer(bytes);
  std::uint64_t sent = 0;
  for (auto _ : state) {
    for (std::size_t offset = 0; offset < bytes;) {
      auto slot = ring.acquire(kWait);
      if (!slot) {
        failed = true;
        break;
      }
      const auto chunk = std::min<std::size_t>(slot->bytes.size(), bytes - offset);
      std::memcpy(slot->bytes.data(), data.data() + offset, chunk);
      capnp::MallocMessageBuilder refBuilder(16);
      auto ref = refBuilder.initRoot<wire::BulkRef>();
      ref.setSegment(slot->segment);
      ref.setOffset(slot->offset);
      ref.setLength(chunk);
      auto reader = ref.asReader();
      if (!sendCall(*link->client, slot->index, {}, &reader)) {
        failed = true;
        break;
      }
      ++sent;
      offset += chunk;
    }
    // Sleep (futex) rather than spin: on two cores a spinning waiter starves the acknowledging
    // thread it waits for.
    for (auto seen = acked.load(std::memory_order_acquire); !failed && seen < sent;
         seen = acked.load(std::memory_order_acquire)) {
      acked.wait(seen, std::memory_order_acquire);
    }
    if (failed) break;
  }
  failed = true;
  acked.fetch_add(0);
  acked.notify_all();
  acks.join();
  if (sent != acked.load()) state.SkipWithError("region transfer failed");
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(bytes));
}

void regionMemcpy(benchmark::State& state) {
  const auto bytes = std::size_t(state.range(0));
  const auto source = touchedBuffer(bytes);
  auto destination = touchedBuffer(bytes);
  for (auto _ : state) {
    std::memcpy(destination.data(), source.data(), bytes);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(bytes));
}

void sizes(benchmark::internal::Benchmark* b, std::int64_t max) {
  for (std::int64_t size = 4 << 10; size <= max; size *= 16) b->Arg(size);
  if (max >= (1 << 30)) b->Arg(1 << 30);
}

}  // namespace

Result<void> registerTransportBenchmarks() {
  benchmark::RegisterBenchmark("RoundTrip/raw_tcp", roundTripRawTcp)->UseRealTime();
  for (const char* kind : {"inproc", "shm", "tcp"}) {
    benchmark::RegisterBenchmark(fmt::format("RoundTrip/{}", kind).c_str(), roundTripChannel, kind)
        ->UseRealTime();
  }
  const std::int64_t kMax = 1 << 30;
  benchmark::RegisterBenchmark("Payload/raw_socket", payloadRawSocket)
      ->Apply([](auto* b) { sizes(b, 1 << 30); })->UseRealTime();
  benchmark::RegisterBenchmark("Payload/tcp", payloadChannel, "tcp")
      ->Apply([](auto* b) { sizes(b, 1 << 30); })->UseRealTime();
  benchmark::RegisterBenchmark("Region/memcpy", regionMemcpy)
      ->Apply([](auto* b) { sizes(b, 1 << 30); })->UseRealTime();
  benchmark::RegisterBenchmark("Region/ring", regionRing, false)
      ->Apply([](auto* b) { sizes(b, 1 << 30); })->UseRealTime();
  benchmark::RegisterBenchmark("Region/ring_readout", regionRing, true)
      ->Apply([](auto* b) { sizes(b, 1 << 30); })->UseRealTime();
  (void)kMax;
  return {};
}

}  // namespace flyt::bench
