#include "flyt/transport/loopback_channel.hpp"

#include <gtest/gtest.h>

#include <thread>

#include "flyt/transport/handshake.hpp"
#include "flyt/wire/session.capnp.h"

using namespace std::chrono_literals;
using flyt::transport::Errc;

namespace {

flyt::transport::Result<void> sendBatch(flyt::transport::Channel& channel, std::uint64_t firstSeq,
                                        unsigned calls) {
  return channel.send([&](capnp::MessageBuilder& builder) {
    auto batch = builder.initRoot<flyt::wire::Envelope>().initBatch();
    auto list = batch.initCalls(calls);
    for (unsigned i = 0; i < calls; ++i) {
      list[i].setSequence(firstSeq + i);
      list[i].setMethod(7);
    }
  });
}

}  // namespace

TEST(LoopbackChannel, DeliversMessagesAndPayloadInOrder) {
  auto [client, server] = flyt::transport::makeLoopbackPair();
  const std::vector<std::byte> payload(1000, std::byte{0x5a});
  for (std::uint64_t i = 0; i < 100; ++i) {
    ASSERT_TRUE(sendBatch(*client, i * 3 + 1, 3));
  }
  ASSERT_TRUE(client->send([](capnp::MessageBuilder& b) { b.initRoot<flyt::wire::Envelope>().initGoodbye(); },
                           payload));
  std::uint64_t expected = 1;
  for (int i = 0; i < 100; ++i) {
    auto in = server->receive(1s);
    ASSERT_TRUE(in) << in.error().describe();
    for (auto call : in->root<flyt::wire::Envelope>().getBatch().getCalls()) {
      EXPECT_EQ(call.getSequence(), expected++);
    }
  }
  auto last = server->receive(1s);
  ASSERT_TRUE(last);
  ASSERT_EQ(last->payload().size(), payload.size());
  EXPECT_TRUE(std::equal(payload.begin(), payload.end(), last->payload().begin()));
}

TEST(LoopbackChannel, SilentPeerTimesOutAndGonePeerDisconnects) {
  auto [client, server] = flyt::transport::makeLoopbackPair();
  const auto start = std::chrono::steady_clock::now();
  auto in = server->receive(50ms);
  ASSERT_FALSE(in);
  EXPECT_EQ(in.error().code, Errc::kTimeout);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 50ms);
  client.reset();
  in = server->receive(10s);
  ASSERT_FALSE(in);
  EXPECT_EQ(in.error().code, Errc::kDisconnected);
  EXPECT_EQ(sendBatch(*server, 1, 1).error().code, Errc::kDisconnected);
}

TEST(Handshake, AcceptsMatchingVersionAndReturnsTheHello) {
  auto [client, server] = flyt::transport::makeLoopbackPair();
  std::thread serving([&] {
    auto hello = flyt::transport::serverHandshake(*server, 2s);
    ASSERT_TRUE(hello) << hello.error().describe();
    EXPECT_EQ(hello->sessionId, 42u);
    EXPECT_EQ(hello->clientName, "app");
  });
  auto ok = flyt::transport::clientHandshake(*client, 42, "app", 2s);
  serving.join();
  EXPECT_TRUE(ok) << ok.error().describe();
}

TEST(Handshake, RefusesWrongProtocolVersionNamingBothVersions) {
  auto [client, server] = flyt::transport::makeLoopbackPair();
  std::thread serving([&] {
    auto hello = flyt::transport::serverHandshake(*server, 2s);
    ASSERT_FALSE(hello);
    EXPECT_EQ(hello.error().code, Errc::kUnsupported);
  });
  auto refused = flyt::transport::clientHandshake(*client, 42, "app", 2s, {}, 999);
  serving.join();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kUnsupported);
  EXPECT_NE(refused.error().message.find("999"), std::string::npos) << refused.error().message;
}

TEST(Handshake, AdmitCallbackCanRefuseWithAReason) {
  auto [client, server] = flyt::transport::makeLoopbackPair();
  std::thread serving([&] {
    auto hello = flyt::transport::serverHandshake(*server, 2s, [](const auto&) {
      return flyt::transport::Result<std::string>(flyt::transport::fail(Errc::kUnsupported, "bad token"));
    });
    EXPECT_FALSE(hello);
  });
  auto refused = flyt::transport::clientHandshake(*client, 42, "app", 2s);
  serving.join();
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("bad token"), std::string::npos);
}

TEST(Handshake, AdmitCallbackCanRedirectTheClient) {
  auto [client, server] = flyt::transport::makeLoopbackPair();
  std::thread serving([&] {
    auto hello = flyt::transport::serverHandshake(*server, 2s, [](const auto&) {
      return flyt::transport::Result<std::string>("shm://worker-7");
    });
    EXPECT_TRUE(hello);
  });
  auto welcome = flyt::transport::clientHandshake(*client, 42, "app", 2s);
  serving.join();
  ASSERT_TRUE(welcome) << welcome.error().describe();
  EXPECT_EQ(welcome->redirect, "shm://worker-7");
}

TEST(Handshake, FirstMessageThatIsNotHelloIsMalformed) {
  auto [client, server] = flyt::transport::makeLoopbackPair();
  ASSERT_TRUE(sendBatch(*client, 1, 1));
  auto hello = flyt::transport::serverHandshake(*server, 1s);
  ASSERT_FALSE(hello);
  EXPECT_EQ(hello.error().code, Errc::kMalformed);
}
