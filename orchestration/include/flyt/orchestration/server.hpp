// flyt-orchestrator's listener. Every accepted TCP connection first runs the connection preamble
// (transport/orchestrator_auth.hpp: the peer's role, and its proof of that role's secret), bounded
// by kPreambleTimeout; only then does Cap'n Proto RPC start on it, with a bootstrap capability
// limited to the role (access.hpp) and messages from the peer of at most 8 MiB. A refused, silent or
// garbage-sending peer is logged with its address and dropped; the orchestrator goes on serving the
// others.
//
// Threading: everything runs on the event loop's thread. The service, the timer and the listener
// must outlive the server; destroying the server ends every connection.
#pragma once

#include <chrono>
#include <string>

#include <kj/async-io.h>
#include <kj/timer.h>

#include "flyt/orchestration/config.hpp"
#include "flyt/orchestration/service.hpp"
#include "flyt/transport/orchestrator_auth.hpp"

namespace flyt::orchestration {

class OrchestratorServer final : private kj::TaskSet::ErrorHandler {
 public:
  // `preambleBound` is overridable for tests only.
  OrchestratorServer(OrchestratorService& service, transport::RoleSecrets secrets, kj::Timer& timer,
                     std::chrono::milliseconds preambleBound = transport::kPreambleTimeout);

  // Accepts connections until the returned promise is dropped; rejects only if accepting fails.
  [[nodiscard]] kj::Promise<void> listen(kj::ConnectionReceiver& listener);

 private:
  kj::Promise<void> admit(kj::Own<kj::AsyncIoStream> stream);
  void taskFailed(kj::Exception&& exception) override;

  OrchestratorService& m_service;
  transport::RoleSecrets m_secrets;
  kj::Timer& m_timer;
  std::chrono::milliseconds m_preambleBound;
  kj::TaskSet m_tasks;
};

// Logs, once at start, how each role is protected: which need a secret, and a loud warning for a
// role without one while `served` (HOST:PORT, config.listen with the real port) is reachable from
// other hosts.
void logAccess(const OrchestratorConfig& config, const std::string& served);

}  // namespace flyt::orchestration
