#include "flyt/transport/tcp_channel.hpp"

#include <capnp/serialize.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fmt/format.h>
#include <thread>
#include <vector>

#include "flyt/transport/handshake.hpp"
#include "flyt/wire/session.capnp.h"

using namespace std::chrono_literals;
using flyt::transport::Channel;
using flyt::transport::Endpoint;
using flyt::transport::Errc;
using flyt::transport::Listener;
using flyt::transport::TransportConfig;

namespace {

using Clock = std::chrono::steady_clock;

Endpoint parse(const std::string& text) {
  auto ep = Endpoint::parse(text);
  EXPECT_TRUE(ep) << text;
  return *ep;
}

std::unique_ptr<Listener> listenOn(const std::string& text, const TransportConfig& config = {}) {
  auto listener = flyt::transport::listenTcp(parse(text), config);
  EXPECT_TRUE(listener) << listener.error().describe();
  return listener ? std::move(*listener) : nullptr;
}

std::unique_ptr<Channel> connectTo(const std::string& text, const TransportConfig& config = {}) {
  auto channel = flyt::transport::connectTcp(parse(text), config);
  EXPECT_TRUE(channel) << channel.error().describe();
  return channel ? std::move(*channel) : nullptr;
}

std::unique_ptr<Channel> acceptOne(Listener& listener) {
  auto channel = listener.accept(5s);
  EXPECT_TRUE(channel) << channel.error().describe();
  return channel ? std::move(*channel) : nullptr;
}

flyt::transport::Result<void> sendBatch(Channel& channel, std::uint64_t firstSeq, unsigned calls,
                                        std::span<const std::byte> payload = {}) {
  return channel.send(
      [&](capnp::MessageBuilder& builder) {
        auto list = builder.initRoot<flyt::wire::Envelope>().initBatch().initCalls(calls);
        for (unsigned i = 0; i < calls; ++i) {
          list[i].setSequence(firstSeq + i);
          list[i].setMethod(7);
        }
      },
      payload);
}

std::vector<std::byte> pattern(std::size_t size, std::uint64_t seed) {
  std::vector<std::byte> bytes(size);
  for (std::size_t i = 0; i < size; ++i) bytes[i] = std::byte(static_cast<unsigned char>((i * 131 + seed * 7) >> 3));
  return bytes;
}

// Fast 64-bit checksum over whole words (sizes used here are multiples of 8).
std::uint64_t checksum(std::span<const std::byte> bytes) {
  std::uint64_t h = 0x9e3779b97f4a7c15ULL;
  const auto* words = reinterpret_cast<const std::uint64_t*>(bytes.data());
  for (std::size_t i = 0; i < bytes.size() / 8; ++i) {
    h = (h ^ words[i]) * 0x100000001b3ULL;
    h ^= h >> 29;
  }
  return h;
}

void roundTrip(Channel& client, Channel& server) {
  const auto payload = pattern(300'000, 1);
  ASSERT_TRUE(sendBatch(client, 1, 3, payload));
  auto in = server.receive(5s);
  ASSERT_TRUE(in) << in.error().describe();
  auto calls = in->root<flyt::wire::Envelope>().getBatch().getCalls();
  ASSERT_EQ(calls.size(), 3u);
  EXPECT_EQ(calls[2].getSequence(), 3u);
  ASSERT_EQ(in->payload().size(), payload.size());
  EXPECT_TRUE(std::equal(payload.begin(), payload.end(), in->payload().begin()));

  ASSERT_TRUE(server.send([](capnp::MessageBuilder& b) {
    b.initRoot<flyt::wire::Envelope>().initGoodbye().setReason("bye");
  }));
  auto reply = client.receive(5s);
  ASSERT_TRUE(reply) << reply.error().describe();
  EXPECT_STREQ(reply->root<flyt::wire::Envelope>().getGoodbye().getReason().cStr(), "bye");
  EXPECT_TRUE(reply->payload().empty());
}

// A plain socket connected to `port` on 127.0.0.1, for writing hand-made bytes.
int rawConnect(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
  return fd;
}

std::uint16_t portOf(const Listener& listener) {
  return parse(listener.endpoint()).port;
}

struct RawHeader {
  std::uint32_t magic = 0x54594c46;
  std::uint16_t version = 1;
  std::uint16_t flags = 0;
  std::uint64_t messageBytes = 0;
  std::uint64_t payloadBytes = 0;
};
static_assert(sizeof(RawHeader) == 24);

// A well-formed frame, as bytes, built independently of TcpChannel's sender.
std::vector<std::byte> validFrame(std::size_t payloadBytes) {
  capnp::MallocMessageBuilder builder;
  builder.initRoot<flyt::wire::Envelope>().initGoodbye().setReason("raw");
  auto words = capnp::messageToFlatArray(builder);
  RawHeader header;
  header.messageBytes = words.size() * sizeof(capnp::word);
  header.payloadBytes = payloadBytes;
  std::vector<std::byte> bytes(sizeof header + header.messageBytes + payloadBytes, std::byte{0x42});
  std::memcpy(bytes.data(), &header, sizeof header);
  std::memcpy(bytes.data() + sizeof header, words.begin(), header.messageBytes);
  return bytes;
}

// Writes `bytes` from a raw client (then closes it when `closeAfter`), expects the server end to
// reject them with `code` and a message containing `needle`, to stay broken, and the listener to
// serve a well-behaved client afterwards.
void expectRejected(const std::vector<std::byte>& bytes, bool closeAfter, Errc code,
                    const std::string& needle, const TransportConfig& config = {}) {
  auto listener = listenOn("tcp://127.0.0.1:0", config);
  ASSERT_TRUE(listener);
  const int raw = rawConnect(portOf(*listener));
  auto server = acceptOne(*listener);
  ASSERT_TRUE(server);
  ASSERT_EQ(::send(raw, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
  if (closeAfter) ::close(raw);

  auto in = server->receive(5s);
  ASSERT_FALSE(in);
  EXPECT_EQ(in.error().code, code) << in.error().describe();
  EXPECT_NE(in.error().message.find(needle), std::string::npos) << in.error().describe();
  auto again = server->receive(100ms);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, code) << "a channel that saw bad input must stay broken";
  if (!closeAfter) ::close(raw);

  auto client = connectTo(listener->endpoint(), config);
  ASSERT_TRUE(client);
  auto next = acceptOne(*listener);
  ASSERT_TRUE(next);
  roundTrip(*client, *next);
}

pid_t spawnPeer(const char* mode, const std::string& endpoint) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl(FLYT_TCP_PEER_PATH, FLYT_TCP_PEER_PATH, mode, endpoint.c_str(), nullptr);
    ::_exit(127);
  }
  return pid;
}

void reap(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
}

}  // namespace

TEST(TcpChannel, RoundTripsMessagesAndPayloadsOverIpv4) {
  auto listener = listenOn("tcp://127.0.0.1:0");
  ASSERT_TRUE(listener);
  EXPECT_NE(portOf(*listener), 0) << "port 0 must be reported as the real port";
  auto client = connectTo(listener->endpoint());
  auto server = acceptOne(*listener);
  ASSERT_TRUE(client && server);
  EXPECT_NE(client->describe().find("tcp://127.0.0.1:"), std::string::npos) << client->describe();
  roundTrip(*client, *server);
}

TEST(TcpChannel, RoundTripsMessagesAndPayloadsOverIpv6) {
  auto listener = flyt::transport::listenTcp(parse("tcp://[::1]:0"), {});
  if (!listener) GTEST_SKIP() << "cannot bind ::1 here: " << listener.error().describe();
  EXPECT_TRUE((*listener)->endpoint().starts_with("tcp://[::1]:")) << (*listener)->endpoint();
  auto client = connectTo((*listener)->endpoint());
  auto server = acceptOne(**listener);
  ASSERT_TRUE(client && server);
  roundTrip(*client, *server);
}

TEST(TcpChannel, ConnectsByHostName) {
  auto listener = listenOn("tcp://127.0.0.1:0");
  ASSERT_TRUE(listener);
  // localhost may resolve to ::1 first, where nobody listens: the next address must be tried.
  auto client = connectTo(fmt::format("tcp://localhost:{}", portOf(*listener)));
  auto server = acceptOne(*listener);
  ASSERT_TRUE(client && server);
  roundTrip(*client, *server);
}

TEST(TcpChannel, KeepsOrderOverManyMessagesAndBatchesWithPayloads) {
  auto listener = listenOn("tcp://127.0.0.1:0");
  auto client = connectTo(listener->endpoint());
  auto server = acceptOne(*listener);
  ASSERT_TRUE(client && server);
  constexpr int kBatches = 2000;
  std::thread sender([&] {
    for (int i = 0; i < kBatches; ++i) {
      // Payload sizes from 0 to ~200 KB, crossing the 64 KiB read-buffer boundary both ways.
      const auto payload = pattern(static_cast<std::size_t>(i % 7) * 33'331, i);
      ASSERT_TRUE(sendBatch(*client, static_cast<std::uint64_t>(i) * 5 + 1, 5, payload));
    }
  });
  std::uint64_t expected = 1;
  for (int i = 0; i < kBatches; ++i) {
    auto in = server->receive(5s);
    ASSERT_TRUE(in) << in.error().describe();
    for (auto call : in->root<flyt::wire::Envelope>().getBatch().getCalls()) {
      ASSERT_EQ(call.getSequence(), expected++);
    }
    const auto want = pattern(static_cast<std::size_t>(i % 7) * 33'331, i);
    ASSERT_EQ(in->payload().size(), want.size());
    ASSERT_TRUE(std::equal(want.begin(), want.end(), in->payload().begin())) << "batch " << i;
  }
  sender.join();
}

TEST(TcpChannel, CarriesAOneGibPayloadIntactIntoTheSinksMemory) {
  constexpr std::size_t kSize = 1ULL << 30;
  auto listener = listenOn("tcp://127.0.0.1:0");
  auto client = connectTo(listener->endpoint());
  auto server = acceptOne(*listener);
  ASSERT_TRUE(client && server);

  auto source = std::make_unique_for_overwrite<std::uint64_t[]>(kSize / 8);
  for (std::size_t i = 0; i < kSize / 8; ++i) source[i] = i * 0x9e3779b97f4a7c15ULL ^ (i >> 11);
  const std::span<const std::byte> sent(reinterpret_cast<const std::byte*>(source.get()), kSize);
  const auto sentSum = checksum(sent);

  auto destination = std::make_unique_for_overwrite<std::byte[]>(kSize);
  std::size_t announced = 0;
  static_cast<flyt::transport::TcpChannel&>(*server).setPayloadSink(
      [&](capnp::MessageReader& message, std::size_t bytes) -> flyt::transport::Result<std::span<std::byte>> {
        EXPECT_TRUE(message.getRoot<flyt::wire::Envelope>().isBatch());
        announced = bytes;
        return std::span<std::byte>(destination.get(), kSize);
      });

  const auto start = Clock::now();
  std::thread sender([&] { ASSERT_TRUE(sendBatch(*client, 1, 1, sent)); });
  auto in = server->receive(30s);
  sender.join();
  const auto seconds = std::chrono::duration<double>(Clock::now() - start).count();
  ASSERT_TRUE(in) << in.error().describe();
  EXPECT_EQ(announced, kSize);
  ASSERT_EQ(in->payload().size(), kSize);
  EXPECT_EQ(static_cast<const void*>(in->payload().data()), destination.get())
      << "the payload must land in the sink's memory, not a copy";
  EXPECT_EQ(checksum(in->payload()), sentSum);
  RecordProperty("MBps", static_cast<int>(kSize / 1e6 / seconds));
}

TEST(TcpChannel, PayloadSinkRefusalDiscardsThePayloadAndKeepsTheChannelUsable) {
  auto listener = listenOn("tcp://127.0.0.1:0");
  auto client = connectTo(listener->endpoint());
  auto server = acceptOne(*listener);
  ASSERT_TRUE(client && server);
  auto& tcp = static_cast<flyt::transport::TcpChannel&>(*server);
  tcp.setPayloadSink([](capnp::MessageReader&, std::size_t) -> flyt::transport::Result<std::span<std::byte>> {
    return flyt::transport::fail(Errc::kOutOfRange, "no staging slot free");
  });
  ASSERT_TRUE(sendBatch(*client, 1, 1, pattern(200'000, 3)));
  auto refused = server->receive(5s);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kOutOfRange);

  std::vector<std::byte> tooSmall(10);
  tcp.setPayloadSink([&](capnp::MessageReader&, std::size_t) -> flyt::transport::Result<std::span<std::byte>> {
    return std::span<std::byte>(tooSmall);
  });
  ASSERT_TRUE(sendBatch(*client, 2, 1, pattern(100, 4)));
  auto shortSpan = server->receive(5s);
  ASSERT_FALSE(shortSpan);
  EXPECT_EQ(shortSpan.error().code, Errc::kInvalidArgument);

  tcp.setPayloadSink({});
  roundTrip(*client, *server);
}

TEST(TcpChannel, ReportsDisconnectedWhenPeerIsKilledMidTransfer) {
  TransportConfig config;
  config.peerTimeout = 2s;
  auto listener = listenOn("tcp://127.0.0.1:0", config);
  const pid_t peer = spawnPeer("stream", listener->endpoint());
  ASSERT_GT(peer, 0);
  auto server = acceptOne(*listener);
  ASSERT_TRUE(server);
  Clock::time_point killedAt;
  std::thread killer([&] {
    std::this_thread::sleep_for(300ms);  // the peer is trickling its 1 GiB payload by now
    killedAt = Clock::now();
    ::kill(peer, SIGKILL);
  });
  auto in = server->receive(10s);
  const auto noticedAt = Clock::now();
  killer.join();
  reap(peer);
  ASSERT_FALSE(in);
  EXPECT_EQ(in.error().code, Errc::kDisconnected) << in.error().describe();
  EXPECT_NE(in.error().message.find("payload"), std::string::npos) << in.error().describe();
  EXPECT_LT(noticedAt - killedAt, config.peerTimeout);
  auto after = sendBatch(*server, 1, 1);
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().code, Errc::kDisconnected);
}

TEST(TcpChannel, SendReportsDisconnectedWhenReceivingPeerIsKilled) {
  TransportConfig config;
  config.peerTimeout = 2s;
  auto listener = listenOn("tcp://127.0.0.1:0", config);
  const pid_t peer = spawnPeer("hold", listener->endpoint());
  ASSERT_GT(peer, 0);
  auto server = acceptOne(*listener);
  ASSERT_TRUE(server);
  // Untouched memory: the peer never reads, so the send blocks once the socket buffers are full.
  constexpr std::size_t kSize = 256ULL << 20;
  auto big = std::make_unique_for_overwrite<std::byte[]>(kSize);
  Clock::time_point killedAt;
  std::thread killer([&] {
    std::this_thread::sleep_for(300ms);
    killedAt = Clock::now();
    ::kill(peer, SIGKILL);
  });
  auto sent = sendBatch(*server, 1, 1, {big.get(), kSize});
  const auto noticedAt = Clock::now();
  killer.join();
  reap(peer);
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error().code, Errc::kDisconnected) << sent.error().describe();
  EXPECT_LT(noticedAt - killedAt, config.peerTimeout);
}

TEST(TcpChannel, ReportsDisconnectedWhenPeerClosesBetweenMessages) {
  auto listener = listenOn("tcp://127.0.0.1:0");
  auto client = connectTo(listener->endpoint());
  auto server = acceptOne(*listener);
  ASSERT_TRUE(client && server);
  client.reset();
  auto in = server->receive(5s);
  ASSERT_FALSE(in);
  EXPECT_EQ(in.error().code, Errc::kDisconnected);
}

TEST(TcpChannel, RejectsATruncatedFrameAndKeepsServingNewClients) {
  auto frame = validFrame(1000);
  frame.resize(frame.size() - 500);
  expectRejected(frame, true, Errc::kDisconnected, "truncated frame");
}

TEST(TcpChannel, RejectsAnOversizedMessageLengthBeforeAllocating) {
  auto frame = validFrame(0);
  RawHeader header;
  header.messageBytes = 1ULL << 60;  // allocating this would fail loudly
  std::memcpy(frame.data(), &header, sizeof header);
  expectRejected(frame, false, Errc::kMalformed, "exceeds the");
}

TEST(TcpChannel, RejectsAnOversizedPayloadLengthBeforeAllocating) {
  TransportConfig config;
  config.maxPayloadBytes = 1 << 20;
  auto frame = validFrame(0);
  RawHeader header;
  std::memcpy(&header, frame.data(), sizeof header);
  header.payloadBytes = (1 << 20) + 1;
  std::memcpy(frame.data(), &header, sizeof header);
  expectRejected(frame, false, Errc::kMalformed, "payload length", config);
}

TEST(TcpChannel, RejectsBadMagic) {
  auto frame = validFrame(16);
  frame[0] = std::byte{'G'};
  frame[1] = std::byte{'E'};
  frame[2] = std::byte{'T'};
  frame[3] = std::byte{' '};
  expectRejected(frame, false, Errc::kMalformed, "magic");
}

TEST(TcpChannel, RejectsAGarbageSegmentTable) {
  auto frame = validFrame(0);
  const std::uint32_t garbage[2] = {3, 0xfffffff0};  // 4 segments, sizes far beyond the frame
  std::memcpy(frame.data() + sizeof(RawHeader), garbage, sizeof garbage);
  expectRejected(frame, false, Errc::kMalformed, "segment table");
}

TEST(TcpChannel, RejectsPointersOutsideTheMessage) {
  auto frame = validFrame(0);
  // Root pointer: a struct pointer whose offset points far past the only segment.
  const std::uint64_t badRoot = (std::uint64_t{1} << 32) | (0x100000u << 2);
  std::memcpy(frame.data() + sizeof(RawHeader) + 8, &badRoot, sizeof badRoot);
  expectRejected(frame, false, Errc::kMalformed, "Cap'n Proto");
}

TEST(TcpChannel, ReportsTimeoutWhenPeerIsSilentAndStaysUsable) {
  auto listener = listenOn("tcp://127.0.0.1:0");
  auto client = connectTo(listener->endpoint());
  auto server = acceptOne(*listener);
  ASSERT_TRUE(client && server);
  const auto start = Clock::now();
  auto in = server->receive(150ms);
  const auto waited = Clock::now() - start;
  ASSERT_FALSE(in);
  EXPECT_EQ(in.error().code, Errc::kTimeout);
  EXPECT_GE(waited, 150ms);
  EXPECT_LT(waited, 1s);
  roundTrip(*client, *server);
}

TEST(TcpChannel, AcceptTimesOutWhenNobodyConnects) {
  auto listener = listenOn("tcp://127.0.0.1:0");
  auto accepted = listener->accept(100ms);
  ASSERT_FALSE(accepted);
  EXPECT_EQ(accepted.error().code, Errc::kTimeout);
}

TEST(TcpChannel, ConnectingToAPortNobodyListensOnFailsQuicklyAndClearly) {
  // Bound but not listening: connections to this port are refused, and no one else can take it.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const auto start = Clock::now();
  auto channel = flyt::transport::connectTcp(
      parse(fmt::format("tcp://127.0.0.1:{}", ntohs(addr.sin_port))), {});
  const auto took = Clock::now() - start;
  ::close(fd);
  ASSERT_FALSE(channel);
  EXPECT_EQ(channel.error().code, Errc::kDisconnected);
  EXPECT_NE(channel.error().message.find("refused"), std::string::npos) << channel.error().describe();
  EXPECT_LT(took, 500ms);
}

TEST(TcpChannel, RejectsAnUnresolvableHostAndNonTcpEndpoints) {
  auto unknown = flyt::transport::connectTcp(parse("tcp://no-such-host.invalid:1"), {});
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("no-such-host.invalid"), std::string::npos);
  auto shm = flyt::transport::listenTcp(parse("shm://flyt"), {});
  ASSERT_FALSE(shm);
  EXPECT_EQ(shm.error().code, Errc::kInvalidArgument);
}

TEST(TcpChannel, SendRefusesOversizedPayloadsAndMessagesWithTooLarge) {
  TransportConfig config;
  config.maxPayloadBytes = 1000;
  config.maxMessageBytes = 4096;
  auto listener = listenOn("tcp://127.0.0.1:0", config);
  auto client = connectTo(listener->endpoint(), config);
  auto server = acceptOne(*listener);
  ASSERT_TRUE(client && server);
  const auto payload = pattern(1001, 0);
  auto bigPayload = sendBatch(*client, 1, 1, payload);
  ASSERT_FALSE(bigPayload);
  EXPECT_EQ(bigPayload.error().code, Errc::kTooLarge);
  auto bigMessage = sendBatch(*client, 1, 1000);
  ASSERT_FALSE(bigMessage);
  EXPECT_EQ(bigMessage.error().code, Errc::kTooLarge);
  ASSERT_TRUE(sendBatch(*client, 1, 1, std::span(payload).first(1000)));
  auto in = server->receive(5s);
  ASSERT_TRUE(in) << in.error().describe();
  EXPECT_EQ(in->payload().size(), 1000u);
}

TEST(TcpChannel, HandshakeSucceedsOverTcp) {
  auto listener = listenOn("tcp://127.0.0.1:0");
  auto client = connectTo(listener->endpoint());
  auto server = acceptOne(*listener);
  ASSERT_TRUE(client && server);
  std::thread serving([&] {
    auto hello = flyt::transport::serverHandshake(*server, 5s);
    ASSERT_TRUE(hello) << hello.error().describe();
    EXPECT_EQ(hello->sessionId, 77u);
    EXPECT_EQ(hello->clientName, "app");
  });
  auto ok = flyt::transport::clientHandshake(*client, 77, "app", 5s);
  serving.join();
  EXPECT_TRUE(ok) << ok.error().describe();
}

TEST(TcpChannel, HandshakeRefusesAWrongProtocolVersionOverTcp) {
  auto listener = listenOn("tcp://127.0.0.1:0");
  auto client = connectTo(listener->endpoint());
  auto server = acceptOne(*listener);
  ASSERT_TRUE(client && server);
  std::thread serving([&] {
    auto hello = flyt::transport::serverHandshake(*server, 5s);
    ASSERT_FALSE(hello);
    EXPECT_EQ(hello.error().code, Errc::kUnsupported);
  });
  auto refused = flyt::transport::clientHandshake(*client, 77, "app", 5s, {}, 999);
  serving.join();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kUnsupported);
  EXPECT_NE(refused.error().message.find("999"), std::string::npos) << refused.error().message;
}
