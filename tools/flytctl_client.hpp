// flytctl's connection to flyt-orchestrator: one Cap'n Proto RPC client; every call bounded by a
// timeout so that flytctl never hangs, and every failure turned into a sentence for the user.
#pragma once

#include <capnp/ez-rpc.h>
#include <fmt/format.h>
#include <kj/async-io.h>
#include <kj/async.h>

#include <chrono>
#include <string>

#include "flyt/transport/error.hpp"
#include "flyt/wire/cluster.capnp.h"

namespace flyt::flytctl {

class Connection {
 public:
  // `address` as orchestratorAddress() normalised it ("host:port"). Connects lazily, at the first call.
  Connection(std::string address, std::chrono::milliseconds timeout);

  [[nodiscard]] wire::Orchestrator::Client& orchestrator() { return m_main; }

  // Sends `request` and waits for the answer, at most the timeout. Errors: kUnavailable when the
  // orchestrator cannot be reached ("cannot reach the orchestrator at tcp://...: connection
  // refused (...)"), kInvalidArgument with the orchestrator's reason when it refused.
  template <class Params, class Results>
  [[nodiscard]] transport::Result<capnp::Response<Results>> send(capnp::Request<Params, Results>& request) {
    kj::Maybe<capnp::Response<Results>> response;
    auto deadline = m_client.getIoProvider().getTimer().afterDelay(m_timeout.count() * kj::MILLISECONDS).then(
        [this]() -> capnp::Response<Results> { kj::throwFatalException(timeoutException()); });
    kj::Maybe<kj::Exception> thrown = kj::runCatchingExceptions([&] {
      response = request.send().exclusiveJoin(kj::mv(deadline)).wait(m_client.getWaitScope());
    });
    KJ_IF_MAYBE (e, thrown) { return failure(*e); }
    KJ_IF_MAYBE (r, response) { return kj::mv(*r); }
    return failure(timeoutException());
  }

 private:
  [[nodiscard]] kj::Exception timeoutException() const;
  [[nodiscard]] std::unexpected<transport::Error> failure(const kj::Exception& e) const;

  std::string m_address;
  std::chrono::milliseconds m_timeout;
  capnp::EzRpcClient m_client;
  wire::Orchestrator::Client m_main;
};

}  // namespace flyt::flytctl
