// How an interposed library finds its session: FLYT_CONFIG (a client.toml: [transport],
// [cluster]) and the FLYT_* variables decide between the orchestrator (a placement and a signed
// grant, then the node it names) and FLYT_SERVER (set by `flyt run`). Used by SessionClient when it
// connects; not thread-safe on its own (the client holds its mutex).
#pragma once

#include <string>

#include "flyt/transport/config.hpp"
#include "flyt/transport/handshake.hpp"

namespace flyt::interpose {

// The application's name for Hello and logs (/proc/self/comm), "cuda-app" if unreadable.
[[nodiscard]] std::string programName();

// Loads the configuration into `config` and opens the session for `api`. The error's message says
// what to fix (a bad file, no FLYT_SERVER, an unreachable node, a refusing orchestrator).
[[nodiscard]] transport::Result<transport::OpenedSession> openConfiguredSession(transport::TransportConfig& config,
                                                                                transport::SessionApi api);

}  // namespace flyt::interpose
