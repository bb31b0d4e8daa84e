// A client's connection to flyt-orchestrator: TCP, the connection preamble for one role
// (orchestrator_auth.hpp), then Cap'n Proto RPC (schema/cluster.capnp) on the same stream. Used by
// flytctl (admin), flyt-node's cluster agent (node) and requestPlacement (tenant).
//
// Threading and lifetime: a connection opened without an event loop owns its thread's KJ event
// loop (kj::setupAsyncIo), so the thread that opens it must have none, and it must be used and
// destroyed on that thread; several may exist one after the other on a thread, never two at once.
// Connections opened on a caller's event loop (the second open) share it and may coexist.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <capnp/capability.h>
#include <kj/async-io.h>
#include <kj/timer.h>

#include "flyt/transport/error.hpp"
#include "flyt/transport/orchestrator_auth.hpp"
#include "flyt/wire/cluster.capnp.h"

namespace flyt::transport {

class OrchestratorConnection {
 public:
  // Connects to `address` ("host:port", as orchestratorAddress() normalises it) and authenticates
  // as `role` with `secret` (empty: none), all within `timeout`. Errors: kUnavailable "cannot reach
  // the orchestrator at tcp://ADDRESS: connection refused" (nothing listens, no answer in time),
  // kUnauthenticated "the orchestrator at tcp://ADDRESS refused this connection: REASON" (and the
  // other preamble errors of offerPreamble, with the same prefix).
  [[nodiscard]] static Result<std::unique_ptr<OrchestratorConnection>> open(const std::string& address,
                                                                            OrchestratorRole role,
                                                                            const std::string& secret,
                                                                            std::chrono::milliseconds timeout);
  // The same on the caller's event loop, which must outlive the connection.
  [[nodiscard]] static Result<std::unique_ptr<OrchestratorConnection>> open(kj::AsyncIoContext& io,
                                                                            const std::string& address,
                                                                            OrchestratorRole role,
                                                                            const std::string& secret,
                                                                            std::chrono::milliseconds timeout);
  ~OrchestratorConnection();
  OrchestratorConnection(const OrchestratorConnection&) = delete;
  OrchestratorConnection& operator=(const OrchestratorConnection&) = delete;

  // The orchestrator's interface. Calls made on it fail with kj exceptions: DISCONNECTED when the
  // connection is gone, FAILED/OVERLOADED with the orchestrator's reason ("remote exception: ...").
  [[nodiscard]] wire::Orchestrator::Client& orchestrator();
  [[nodiscard]] kj::WaitScope& waitScope();
  [[nodiscard]] kj::Timer& timer();
  [[nodiscard]] const std::string& address() const;

  // Waits for `promise` at most `bound`; past it, throws DISCONNECTED "no answer within N ms".
  template <class T>
  T wait(kj::Promise<T>&& promise, std::chrono::milliseconds bound) {
    auto late = timer().afterDelay(bound.count() * kj::MILLISECONDS).then([bound]() -> T {
      kj::throwFatalException(
          kj::Exception(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__,
                        kj::str("no answer within ", bound.count(), " ms")));
    });
    return promise.exclusiveJoin(kj::mv(late)).wait(waitScope());
  }

  struct Impl;

 private:
  explicit OrchestratorConnection(std::unique_ptr<Impl> impl);
  static Result<std::unique_ptr<OrchestratorConnection>> connect(std::unique_ptr<Impl> impl, const std::string& address,
                                                                 OrchestratorRole role, const std::string& secret,
                                                                 std::chrono::milliseconds timeout);
  std::unique_ptr<Impl> m_impl;
};

}  // namespace flyt::transport
