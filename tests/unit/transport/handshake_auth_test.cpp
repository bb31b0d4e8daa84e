// TCP authentication in the session handshake (handshake.hpp), over real loopback sockets: the
// right token is admitted, a missing or wrong one is refused with messages that say so on both
// sides, a response recorded for one challenge does not open another, and a client with a token
// refuses a server that cannot prove it holds the same one.
#include <gtest/gtest.h>

#include <capnp/message.h>

#include <thread>
#include <vector>

#include "flyt/transport/handshake.hpp"
#include "flyt/transport/tcp_channel.hpp"
#include "flyt/wire/session.capnp.h"

using namespace std::chrono_literals;
namespace ft = flyt::transport;
using ft::Errc;

namespace {

constexpr std::string_view kToken = "0123456789abcdef-the-right-token";
constexpr std::string_view kOtherToken = "0123456789abcdef-another-token!!";
constexpr std::uint64_t kSession = 0x1234;

// A connected pair of TCP channels on loopback.
struct Pair {
  std::unique_ptr<ft::Channel> client;
  std::unique_ptr<ft::Channel> server;
};

Pair connectPair() {
  auto where = ft::Endpoint::parse("tcp://127.0.0.1:0");
  EXPECT_TRUE(where);
  auto listener = ft::listenTcp(*where, {});
  EXPECT_TRUE(listener) << listener.error().describe();
  auto endpoint = ft::Endpoint::parse((*listener)->endpoint());
  auto client = ft::connectTcp(*endpoint, {});
  EXPECT_TRUE(client) << client.error().describe();
  auto server = (*listener)->accept(5s);
  EXPECT_TRUE(server) << server.error().describe();
  return Pair{std::move(*client), std::move(*server)};
}

struct Outcome {
  ft::Result<ft::HelloInfo> server = ft::fail(Errc::kTimeout, "not run");
  ft::Result<ft::WelcomeInfo> client = ft::fail(Errc::kTimeout, "not run");
};

Outcome handshake(std::string_view serverToken, std::string_view clientToken) {
  auto pair = connectPair();
  Outcome outcome;
  std::thread serving([&] { outcome.server = ft::serverHandshake(*pair.server, 5s, {}, serverToken); });
  outcome.client = ft::clientHandshake(*pair.client, kSession, "app", 5s, {}, 0, clientToken);
  serving.join();
  return outcome;
}

bool contains(const std::string& text, std::string_view part) { return text.find(part) != std::string::npos; }

std::vector<std::byte> bytes(capnp::Data::Reader data) {
  return {reinterpret_cast<const std::byte*>(data.begin()), reinterpret_cast<const std::byte*>(data.end())};
}

kj::ArrayPtr<const capnp::byte> wire(const std::vector<std::byte>& data) {
  return kj::arrayPtr(reinterpret_cast<const capnp::byte*>(data.data()), data.size());
}

void sendHello(ft::Channel& channel) {
  ASSERT_TRUE(channel.send([](capnp::MessageBuilder& builder) {
    auto hello = builder.initRoot<flyt::wire::Envelope>().initHello();
    hello.setProtocolVersion(flyt::wire::PROTOCOL_VERSION);
    hello.setSessionId(kSession);
    hello.setClientName("replayer");
  }));
}

// Plays a server that challenges with `nonce` and `serverProof`, records the client's proof and
// answers Welcome(ok).
std::vector<std::byte> playServer(ft::Channel& channel, const std::vector<std::byte>& nonce,
                                  const std::vector<std::byte>& serverProof) {
  auto hello = channel.receive(5s);
  EXPECT_TRUE(hello && hello->root<flyt::wire::Envelope>().isHello());
  EXPECT_TRUE(channel.send([&](capnp::MessageBuilder& builder) {
    auto challenge = builder.initRoot<flyt::wire::Envelope>().initAuthChallenge();
    challenge.setNonce(wire(nonce));
    challenge.setServerProof(wire(serverProof));
  }));
  auto response = channel.receive(5s);
  EXPECT_TRUE(response && response->root<flyt::wire::Envelope>().isAuthResponse());
  if (!response) return {};
  auto proof = bytes(response->root<flyt::wire::Envelope>().getAuthResponse().getProof());
  EXPECT_TRUE(channel.send([](capnp::MessageBuilder& builder) {
    auto welcome = builder.initRoot<flyt::wire::Envelope>().initWelcome();
    welcome.setProtocolVersion(flyt::wire::PROTOCOL_VERSION);
    welcome.setSessionId(kSession);
    welcome.setStatus(flyt::wire::TransportStatus::OK);
  }));
  return proof;
}

}  // namespace

TEST(HandshakeAuth, AdmitsAClientWithTheRightToken) {
  auto outcome = handshake(kToken, kToken);
  ASSERT_TRUE(outcome.server) << outcome.server.error().describe();
  ASSERT_TRUE(outcome.client) << outcome.client.error().describe();
  EXPECT_EQ(outcome.server->sessionId, kSession);
}

TEST(HandshakeAuth, RefusesAClientWithoutATokenWithAClearMessageOnBothSides) {
  auto outcome = handshake(kToken, "");
  ASSERT_FALSE(outcome.server);
  EXPECT_EQ(outcome.server.error().code, Errc::kUnauthenticated);
  EXPECT_TRUE(contains(outcome.server.error().message, "missing token")) << outcome.server.error().message;
  EXPECT_TRUE(contains(outcome.server.error().message, "127.0.0.1")) << "no peer address: " << outcome.server.error().message;
  ASSERT_FALSE(outcome.client);
  EXPECT_EQ(outcome.client.error().code, Errc::kUnauthenticated);
  EXPECT_TRUE(contains(outcome.client.error().message, "requires authentication")) << outcome.client.error().message;
  EXPECT_TRUE(contains(outcome.client.error().message, "FLYT_AUTH_TOKEN")) << outcome.client.error().message;
}

TEST(HandshakeAuth, RefusesAClientWithAWrongTokenWithAClearMessageOnBothSides) {
  auto outcome = handshake(kToken, kOtherToken);
  ASSERT_FALSE(outcome.server);
  EXPECT_EQ(outcome.server.error().code, Errc::kUnauthenticated);
  EXPECT_TRUE(contains(outcome.server.error().message, "wrong token")) << outcome.server.error().message;
  ASSERT_FALSE(outcome.client);
  EXPECT_EQ(outcome.client.error().code, Errc::kUnauthenticated);
  EXPECT_TRUE(contains(outcome.client.error().message, "refused authentication")) << outcome.client.error().message;
  EXPECT_TRUE(contains(outcome.client.error().message, "authentication failed: wrong or missing token (auth_token)"))
      << outcome.client.error().message;
}

TEST(HandshakeAuth, RefusesAResponseRecordedForAnotherChallenge) {
  // A real client with the token answers a challenge an eavesdropper chose...
  std::vector<std::byte> recorded;
  {
    auto pair = connectPair();
    std::thread serving([&] { recorded = playServer(*pair.server, std::vector<std::byte>(32, std::byte{7}), {}); });
    (void)ft::clientHandshake(*pair.client, kSession, "app", 5s, {}, 0, kToken);
    serving.join();
  }
  ASSERT_EQ(recorded.size(), 32u);
  // ...who replays that answer, for the same session id, to the real server's fresh challenge.
  auto pair = connectPair();
  ft::Result<ft::HelloInfo> served = ft::fail(Errc::kTimeout, "not run");
  std::thread serving([&] { served = ft::serverHandshake(*pair.server, 5s, {}, kToken); });
  sendHello(*pair.client);
  auto challenge = pair.client->receive(5s);
  ASSERT_TRUE(challenge && challenge->root<flyt::wire::Envelope>().isAuthChallenge());
  ASSERT_TRUE(pair.client->send([&](capnp::MessageBuilder& builder) {
    builder.initRoot<flyt::wire::Envelope>().initAuthResponse().setProof(wire(recorded));
  }));
  auto answer = pair.client->receive(5s);
  serving.join();
  ASSERT_FALSE(served);
  EXPECT_TRUE(contains(served.error().message, "wrong token")) << served.error().message;
  ASSERT_TRUE(answer && answer->root<flyt::wire::Envelope>().isWelcome());
  auto welcome = answer->root<flyt::wire::Envelope>().getWelcome();
  EXPECT_NE(welcome.getStatus(), flyt::wire::TransportStatus::OK);
  EXPECT_EQ(std::string(welcome.getMessage().cStr()), "authentication failed: wrong or missing token (auth_token)");
}

TEST(HandshakeAuth, AClientWithATokenRefusesAServerThatDoesNotAuthenticate) {
  auto outcome = handshake("", kToken);
  ASSERT_FALSE(outcome.client);
  EXPECT_EQ(outcome.client.error().code, Errc::kUnauthenticated);
  EXPECT_TRUE(contains(outcome.client.error().message, "did not authenticate itself")) << outcome.client.error().message;
}

TEST(HandshakeAuth, AClientWithATokenRefusesAServerWhoseProofIsWrong) {
  auto pair = connectPair();
  std::thread serving([&] {
    (void)playServer(*pair.server, std::vector<std::byte>(32, std::byte{1}), std::vector<std::byte>(32, std::byte{2}));
  });
  auto client = ft::clientHandshake(*pair.client, kSession, "app", 5s, {}, 0, kToken);
  serving.join();
  ASSERT_FALSE(client);
  EXPECT_EQ(client.error().code, Errc::kUnauthenticated);
  EXPECT_TRUE(contains(client.error().message, "failed to prove")) << client.error().message;
}

TEST(HandshakeAuth, OpenSessionAuthenticatesWithTheConfiguredToken) {
  auto where = ft::Endpoint::parse("tcp://127.0.0.1:0");
  auto listener = ft::listenTcp(*where, {});
  ASSERT_TRUE(listener);
  std::thread serving([&] {
    for (int i = 0; i < 2; ++i) {
      auto channel = (*listener)->accept(5s);
      ASSERT_TRUE(channel);
      (void)ft::serverHandshake(**channel, 5s, {}, kToken);
    }
  });
  ft::TransportConfig config;
  config.authToken = std::string(kToken);
  auto opened = ft::openSession((*listener)->endpoint(), config, "app");
  EXPECT_TRUE(opened) << opened.error().describe();
  config.authToken.clear();
  auto refused = ft::openSession((*listener)->endpoint(), config, "app");
  serving.join();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kUnauthenticated);
}
