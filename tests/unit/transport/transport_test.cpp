#include "flyt/transport/transport.hpp"

#include <gtest/gtest.h>

#include <thread>

#include "flyt/transport/handshake.hpp"

using namespace std::chrono_literals;
namespace ft = flyt::transport;

TEST(Transport, ListenAndConnectByEndpointTextOpenASession) {
  ft::TransportConfig config;
  auto where = ft::Endpoint::parse("tcp://127.0.0.1:0");
  ASSERT_TRUE(where);
  auto listener = ft::listen(*where, config);
  ASSERT_TRUE(listener) << listener.error().describe();
  auto target = ft::Endpoint::parse((*listener)->endpoint());
  ASSERT_TRUE(target) << (*listener)->endpoint();
  EXPECT_NE(target->port, 0);

  std::thread serving([&] {
    auto channel = (*listener)->accept(5s);
    ASSERT_TRUE(channel) << channel.error().describe();
    auto hello = ft::serverHandshake(**channel, 5s);
    ASSERT_TRUE(hello) << hello.error().describe();
    EXPECT_EQ(hello->clientName, "transport_test");
  });
  auto channel = ft::connect(*target, config);
  ASSERT_TRUE(channel) << channel.error().describe();
  auto ok = ft::clientHandshake(**channel, ft::newSessionId(), "transport_test", 5s);
  serving.join();
  EXPECT_TRUE(ok) << ok.error().describe();
}

TEST(Transport, ConnectToANodeThatIsNotThereFailsQuicklyWithAClearError) {
  ft::TransportConfig config;
  config.connectTimeout = 500ms;
  auto where = ft::Endpoint::parse("tcp://127.0.0.1:1");
  ASSERT_TRUE(where);
  const auto start = std::chrono::steady_clock::now();
  auto channel = ft::connect(*where, config);
  ASSERT_FALSE(channel);
  EXPECT_EQ(channel.error().code, ft::Errc::kDisconnected);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
}

TEST(Transport, OpenSessionFollowsARedirectToTheWorkersEndpoint) {
  ft::TransportConfig config;
  auto front = ft::listen(*ft::Endpoint::parse("tcp://127.0.0.1:0"), config);
  auto worker = ft::listen(*ft::Endpoint::parse("tcp://127.0.0.1:0"), config);
  ASSERT_TRUE(front && worker);
  std::uint64_t sessionSeenByFront = 0;
  std::uint64_t sessionSeenByWorker = 0;
  std::thread node([&] {
    auto channel = (*front)->accept(5s);
    ASSERT_TRUE(channel);
    auto hello = ft::serverHandshake(**channel, 5s, [&](const ft::HelloInfo& info) {
      sessionSeenByFront = info.sessionId;
      return ft::Result<std::string>((*worker)->endpoint());
    });
    ASSERT_TRUE(hello) << hello.error().describe();
    auto served = (*worker)->accept(5s);
    ASSERT_TRUE(served);
    auto again = ft::serverHandshake(**served, 5s);
    ASSERT_TRUE(again) << again.error().describe();
    sessionSeenByWorker = again->sessionId;
  });
  auto session = ft::openSession((*front)->endpoint(), config, "app");
  node.join();
  ASSERT_TRUE(session) << session.error().describe();
  EXPECT_EQ(session->endpoint, (*worker)->endpoint());
  EXPECT_EQ(session->sessionId, sessionSeenByFront);
  EXPECT_EQ(session->sessionId, sessionSeenByWorker);
}
