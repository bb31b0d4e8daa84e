// What the worker's SessionHandler refuses before doing any work: found by fuzz/dispatch_fuzz.cpp.
// The handler runs on the GPU stand-in (test double) over a real loopback channel.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <utility>
#include <vector>

#include "flyt/api/codec.hpp"

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

// Sends one call with `args` (the codec's bytes) in a batch that wants a reply, lets the handler
// serve it, and returns the last result's CUDA error and result bytes.
std::pair<int, std::vector<std::byte>> callOnce(Session& session, flyt::api::Method method,
                                                const std::vector<std::byte>& args, std::uint64_t sequence) {
  auto sent = session.client->send([&](capnp::MessageBuilder& message) {
    auto batch = message.initRoot<flyt::wire::Envelope>().initBatch();
    batch.setWantsReply(true);
    auto call = batch.initCalls(1)[0];
    call.setSequence(sequence);
    call.setMethod(static_cast<std::uint32_t>(method));
    call.getArgs().setAs<capnp::Data>(
        kj::arrayPtr(reinterpret_cast<const capnp::byte*>(args.data()), args.size()));
  });
  EXPECT_TRUE(sent.has_value());
  auto incoming = session.server->receive(milliseconds(1000));
  EXPECT_TRUE(incoming.has_value());
  auto state = session.handler->handle(*incoming, *session.server);
  EXPECT_TRUE(state.has_value());
  auto reply = session.client->receive(milliseconds(1000));
  EXPECT_TRUE(reply.has_value());
  if (!reply) return {-1, {}};
  auto results = reply->root<flyt::wire::Envelope>().getReply().getResults();
  auto last = results[results.size() - 1];
  auto bytes = last.getResults().getAs<capnp::Data>();
  return {last.getCudaError(), {reinterpret_cast<const std::byte*>(bytes.begin()),
                                reinterpret_cast<const std::byte*>(bytes.end())}};
}

template <class... T>
std::vector<std::byte> encode(const T&... values) {
  std::vector<std::byte> out;
  flyt::api::ArgWriter writer(out);
  (writer.put(values), ...);
  return out;
}

// A zero-width 2D memset of 2^57 rows touches no byte: the stand-in must answer at once instead of
// walking the rows (the dispatch fuzzer's hang, fuzz/dispatch_fuzz.cpp).
TEST(DispatcherLimits, ZeroWidth2DMemsetOfCountlessRowsIsAnsweredAtOnce) {
  auto session = openSession();
  auto [mallocError, pointerBytes] =
      callOnce(session, flyt::api::Method::cudaMalloc, encode(std::uint64_t{4096}), 1);
  ASSERT_EQ(mallocError, 0);
  ASSERT_EQ(pointerBytes.size(), sizeof(std::uint64_t));
  std::uint64_t pointer = 0;
  std::memcpy(&pointer, pointerBytes.data(), sizeof pointer);
  const auto started = std::chrono::steady_clock::now();
  auto [error, unused] = callOnce(session, flyt::api::Method::cudaMemset2D,
                                  encode(pointer, std::uint64_t{6400}, std::int32_t{11264}, std::uint64_t{0},
                                         std::uint64_t{144116287604261185ULL}),
                                  2);
  EXPECT_EQ(error, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
}

}  // namespace

// Failed calls of batches that want no reply wait for the next reply; a client that never asks for
// one must not grow the worker without bound. 100 batches of 100 failing calls (unknown method ids)
// are reported as at most 64 failures: the first ones and the latest, then the reply's own call.
TEST(DispatcherLimits, FailuresOfUnansweredBatchesAreBoundedKeepingTheFirstAndTheLatest) {
  auto session = openSession();
  std::uint64_t sequence = 1;
  for (int b = 0; b < 100; ++b) {
    auto sent = session.client->send([&](capnp::MessageBuilder& message) {
      auto batch = message.initRoot<flyt::wire::Envelope>().initBatch();
      batch.setWantsReply(false);
      auto calls = batch.initCalls(100);
      for (unsigned i = 0; i < 100; ++i) {
        calls[i].setSequence(sequence++);
        calls[i].setMethod(999'999);  // no such method: each call fails
      }
    });
    ASSERT_TRUE(sent.has_value());
    auto incoming = session.server->receive(milliseconds(1000));
    ASSERT_TRUE(incoming.has_value());
    ASSERT_TRUE(session.handler->handle(*incoming, *session.server).has_value());
    EXPECT_FALSE(session.client->receive(milliseconds(0)).has_value());  // no reply wanted, none sent
  }
  const std::uint64_t lastFailed = sequence - 1;
  ASSERT_TRUE(session.client->send([&](capnp::MessageBuilder& message) {
    auto batch = message.initRoot<flyt::wire::Envelope>().initBatch();
    batch.setWantsReply(true);
    auto call = batch.initCalls(1)[0];
    call.setSequence(sequence);
    call.setMethod(static_cast<std::uint32_t>(flyt::api::Method::cudaGetDevice));
  }).has_value());
  auto incoming = session.server->receive(milliseconds(1000));
  ASSERT_TRUE(incoming.has_value());
  ASSERT_TRUE(session.handler->handle(*incoming, *session.server).has_value());
  auto reply = session.client->receive(milliseconds(1000));
  ASSERT_TRUE(reply.has_value());
  auto results = reply->root<flyt::wire::Envelope>().getReply().getResults();
  ASSERT_EQ(results.size(), 64u + 1u);
  EXPECT_EQ(results[0].getSequence(), 1u);                // CUDA reports the first asynchronous error
  EXPECT_EQ(results[62].getSequence(), 63u);
  EXPECT_EQ(results[63].getSequence(), lastFailed);       // and cudaGetLastError the latest
  EXPECT_EQ(results[64].getSequence(), sequence);
  for (unsigned i = 0; i < 64; ++i) EXPECT_EQ(results[i].getStatus(), flyt::wire::TransportStatus::UNSUPPORTED) << i;

  // The count starts again after a reply.
  EXPECT_EQ(callOnce(session, flyt::api::Method::cudaGetDevice, {}, sequence + 1).first, 0);
}
