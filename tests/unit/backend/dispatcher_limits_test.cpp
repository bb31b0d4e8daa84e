// What the worker's SessionHandler refuses before doing any work: found by fuzz/dispatch_fuzz.cpp.
// The handler runs on the GPU stand-in (test double) over a real loopback channel.
#include <gtest/gtest.h>

#include <chrono>

#include "flyt/api/methods.hpp"
#include "flyt/backend/session_handler.hpp"
#include "flyt/transport/loopback_channel.hpp"
#include "flyt/wire/session.capnp.h"

namespace {

namespace fb = flyt::backend;
namespace ft = flyt::transport;
using std::chrono::milliseconds;

struct Session {
  std::unique_ptr<ft::Channel> client;
  std::unique_ptr<ft::Channel> server;
  std::unique_ptr<fb::SessionHandler> handler;
};

Session openSession() {
  Session session;
  auto [client, server] = ft::makeLoopbackPair();
  session.client = std::move(client);
  session.server = std::move(server);
  fb::SessionOptions options;
  options.executor = fb::ExecutorKind::kStandIn;
  options.captureOutput = false;
  auto made = fb::makeSessionHandler(ft::HelloInfo{.protocolVersion = 1, .sessionId = 7}, options);
  EXPECT_TRUE(made.has_value());
  if (made) session.handler = std::move(*made);
  return session;
}

// Sends a Batch of `count` cudaGetDevice calls that wants a reply, and hands it to the handler.
ft::Result<fb::SessionState> sendBatch(Session& session, unsigned count) {
  auto sent = session.client->send([&](capnp::MessageBuilder& message) {
    auto batch = message.initRoot<flyt::wire::Envelope>().initBatch();
    batch.setWantsReply(true);
    auto calls = batch.initCalls(count);
    for (unsigned i = 0; i < count; ++i) {
      calls[i].setSequence(i + 1);
      calls[i].setMethod(static_cast<std::uint32_t>(flyt::api::Method::cudaGetDevice));
      calls[i].getArgs().initAsAnyStruct(8, 4);
    }
  });
  EXPECT_TRUE(sent.has_value());
  auto incoming = session.server->receive(milliseconds(1000));
  EXPECT_TRUE(incoming.has_value());
  return session.handler->handle(*incoming, *session.server);
}

TEST(DispatcherLimits, RefusesABatchOfMoreCallsThanAnyClientSends) {
  auto session = openSession();
  auto state = sendBatch(session, 100'000);
  ASSERT_FALSE(state.has_value());
  EXPECT_EQ(state.error().code, ft::Errc::kMalformed);
  EXPECT_NE(state.error().message.find("100000 calls"), std::string::npos) << state.error().message;
  // Nothing was executed, so nothing is answered.
  EXPECT_FALSE(session.client->receive(milliseconds(0)).has_value());
}

}  // namespace
