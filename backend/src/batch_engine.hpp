// The reply rule of a session (schema/session.capnp), for any API's calls: a batch that wants a
// reply gets one Reply holding the results of every earlier call that failed since the last reply,
// then the result of its last call, with the device output captured meanwhile. Used by the
// runtime's dispatcher (dispatcher.cpp) and the driver session (driver/driver_session.cpp).
//
// `Outcome` has: sequence, error (an integer CUDA error), status, detail, results, payloadBytes(),
// failed().
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "flyt/transport/channel.hpp"
#include "flyt/transport/log.hpp"
#include "flyt/wire/session.capnp.h"

namespace flyt::backend {

// More calls than any client batches (256), with room to spare: a list of empty Call structs costs
// Cap'n Proto a word each, so a tiny message could otherwise announce millions of calls.
inline constexpr unsigned kMaxCallsPerBatch = 4096;
// Failures of batches that want no reply wait for the next reply: the first kMaxHeldFailures - 1
// are kept, then only the latest and a count of those dropped.
inline constexpr std::size_t kMaxHeldFailures = 64;
// Device printf carried by one reply: with no inline payload, and beside one.
inline constexpr std::size_t kOutputPerReply = 512 << 10;
inline constexpr std::size_t kOutputBesidePayload = 32 << 10;

template <class Outcome>
class BatchEngine {
 public:
  using Execute = std::function<Outcome(wire::Call::Reader)>;
  // `drainOutput(limit)`: up to `limit` bytes of captured device output (empty without capture).
  using DrainOutput = std::function<std::string(std::size_t)>;

  explicit BatchEngine(std::uint64_t sessionId) : m_sessionId(sessionId) {}

  transport::Result<void> handle(wire::Batch::Reader batch, transport::Channel& channel, const Execute& execute,
                                 const DrainOutput& drainOutput) {
    auto calls = batch.getCalls();
    if (calls.size() > kMaxCallsPerBatch) {
      return transport::fail(transport::Errc::kMalformed, fmt::format("session {:016x}: a batch of {} calls (at most {})",
                                                                      m_sessionId, calls.size(), kMaxCallsPerBatch));
    }
    Outcome last;
    for (unsigned i = 0; i < calls.size(); ++i) {
      Outcome outcome = execute(calls[i]);
      outcome.sequence = calls[i].getSequence();
      if (batch.getWantsReply() && i + 1 == calls.size()) {
        last = std::move(outcome);
      } else if (outcome.failed()) {
        // The application learns of it at its next synchronising call, without the call's name.
        flyt::logger("worker").debug("session {:016x}: asynchronous call #{} (method {}) failed: error {}{}{}", m_sessionId,
                                     outcome.sequence, calls[i].getMethod(), static_cast<int>(outcome.error),
                                     outcome.detail.empty() ? "" : ", ", outcome.detail);
        hold(std::move(outcome));
      }
    }
    if (!batch.getWantsReply()) return {};
    const std::string output = drainOutput(last.payloadBytes().empty() ? kOutputPerReply : kOutputBesidePayload);
    auto sent = channel.send(
        [&](capnp::MessageBuilder& builder) {
          auto reply = builder.initRoot<wire::Envelope>().initReply();
          if (!output.empty()) {
            reply.setOutput(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(output.data()), output.size()));
          }
          auto results = reply.initResults(static_cast<unsigned>(m_failures.size() + 1));
          unsigned index = 0;
          auto fill = [&](const Outcome& outcome) {
            auto result = results[index++];
            result.setSequence(outcome.sequence);
            result.setCudaError(static_cast<std::int32_t>(outcome.error));
            result.setStatus(outcome.status);
            if (!outcome.detail.empty()) result.setDetail(outcome.detail);
            if (!outcome.results.empty()) {
              result.getResults().template setAs<capnp::Data>(kj::arrayPtr(
                  reinterpret_cast<const capnp::byte*>(outcome.results.data()), outcome.results.size()));
            }
          };
          for (const auto& failure : m_failures) fill(failure);
          fill(last);
        },
        last.payloadBytes());
    if (m_dropped > 0) {
      flyt::logger("worker").warn("session {:016x}: {} more asynchronous calls failed than one reply reports ({}); "
                                  "the first and the latest were reported", m_sessionId, m_dropped, kMaxHeldFailures);
    }
    m_failures.clear();
    m_dropped = 0;
    if (!sent) return std::unexpected(sent.error());
    return {};
  }

 private:
  void hold(Outcome&& outcome) {
    if (m_failures.size() < kMaxHeldFailures) {
      m_failures.push_back(std::move(outcome));
      return;
    }
    m_failures.back() = std::move(outcome);
    ++m_dropped;
  }

  std::uint64_t m_sessionId;
  std::vector<Outcome> m_failures;
  std::size_t m_dropped = 0;
};

}  // namespace flyt::backend
