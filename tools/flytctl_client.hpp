// flytctl's connection to flyt-orchestrator: one Cap'n Proto RPC client authenticated as admin
// (transport/orchestrator_connection.hpp); every call bounded by a timeout so that flytctl never
// hangs, and every failure turned into a sentence for the user.
#pragma once

#include <fmt/format.h>
#include <kj/async.h>

#include <chrono>
#include <memory>
#include <string>

#include "flyt/transport/error.hpp"
#include "flyt/transport/orchestrator_connection.hpp"
#include "flyt/wire/cluster.capnp.h"

namespace flyt::flytctl {

class Connection {
 public:
  // Connects to `address` (as orchestratorAddress() normalised it: "host:port") as admin, proving
  // `adminToken` when it is not empty. Errors: kUnavailable "cannot reach the orchestrator at
  // tcp://...: connection refused (is flyt-orchestrator running? ...)", kUnauthenticated "the
  // orchestrator at tcp://... refused this connection: wrong admin token (...)".
  [[nodiscard]] static transport::Result<std::unique_ptr<Connection>> open(const std::string& address,
                                                                           const std::string& adminToken,
                                                                           std::chrono::milliseconds timeout);

  [[nodiscard]] wire::Orchestrator::Client& orchestrator() { return m_link->orchestrator(); }

  // Sends `request` and waits for the answer, at most the timeout. Errors: kUnavailable when the
  // orchestrator cannot be reached ("cannot reach the orchestrator at tcp://...: connection
  // refused (...)"), kInvalidArgument with the orchestrator's reason when it refused.
  template <class Params, class Results>
  [[nodiscard]] transport::Result<capnp::Response<Results>> send(capnp::Request<Params, Results>& request) {
    kj::Maybe<capnp::Response<Results>> response;
    kj::Maybe<kj::Exception> thrown =
        kj::runCatchingExceptions([&] { response = m_link->wait(request.send(), m_timeout); });
    KJ_IF_MAYBE (e, thrown) { return failure(*e); }
    KJ_IF_MAYBE (r, response) { return kj::mv(*r); }
    return transport::fail(transport::Errc::kUnavailable, "no answer");
  }

 private:
  Connection(std::unique_ptr<transport::OrchestratorConnection> link, std::chrono::milliseconds timeout)
      : m_link(std::move(link)), m_timeout(timeout) {}
  [[nodiscard]] std::unexpected<transport::Error> failure(const kj::Exception& e) const;

  std::unique_ptr<transport::OrchestratorConnection> m_link;
  std::chrono::milliseconds m_timeout;
};

// Where to reach the orchestrator, when it cannot be: appended to kUnavailable errors.
inline constexpr std::string_view kUnreachableHint = "(is flyt-orchestrator running? --orchestrator / FLYT_ORCHESTRATOR)";

}  // namespace flyt::flytctl
