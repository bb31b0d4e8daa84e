#include "flyt/transport/endpoint.hpp"

#include <gtest/gtest.h>

using flyt::transport::Endpoint;
using flyt::transport::Errc;

TEST(Endpoint, ParsesTcpIpv4HostAndPort) {
  auto ep = Endpoint::parse("tcp://127.0.0.1:7070");
  ASSERT_TRUE(ep) << ep.error().describe();
  EXPECT_EQ(ep->kind, Endpoint::Kind::kTcp);
  EXPECT_EQ(ep->host, "127.0.0.1");
  EXPECT_EQ(ep->port, 7070);
  EXPECT_EQ(ep->toString(), "tcp://127.0.0.1:7070");
}

TEST(Endpoint, ParsesBracketedIpv6AndPrintsItBack) {
  auto ep = Endpoint::parse("tcp://[::1]:0");
  ASSERT_TRUE(ep) << ep.error().describe();
  EXPECT_EQ(ep->host, "::1");
  EXPECT_EQ(ep->port, 0);
  EXPECT_EQ(ep->toString(), "tcp://[::1]:0");
}

TEST(Endpoint, ParsesShmName) {
  auto ep = Endpoint::parse("shm://flyt-node_0");
  ASSERT_TRUE(ep);
  EXPECT_EQ(ep->kind, Endpoint::Kind::kShm);
  EXPECT_EQ(ep->name, "flyt-node_0");
  EXPECT_EQ(ep->toString(), "shm://flyt-node_0");
}

TEST(Endpoint, RejectsUnknownSchemeBadPortAndBadNamesWithTheTextInTheMessage) {
  for (const char* text : {"udp://x:1", "tcp://host", "tcp://host:99999", "tcp://:80",
                           "tcp://::1:80", "shm://", "shm://a/b", "tcp://[::1]80"}) {
    auto ep = Endpoint::parse(text);
    ASSERT_FALSE(ep) << text;
    EXPECT_EQ(ep.error().code, Errc::kInvalidArgument);
    EXPECT_NE(ep.error().message.find(text), std::string::npos) << ep.error().message;
  }
}
