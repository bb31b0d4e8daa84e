// The session handler of a driver-API session (Hello's api = driver: Flyt's libcuda.so.1).
#pragma once

#include <memory>

#include "flyt/backend/session_handler.hpp"

namespace flyt::backend {

// Serves the session with NVIDIA's driver (loaded by driver_loader.hpp) or, per options.executor,
// the driver-level GPU stand-in (a test double). Fails when the requested driver is unavailable, or
// when the session has an SM share, which driver sessions cannot enforce yet (refused rather than
// run on the whole GPU).
[[nodiscard]] transport::Result<std::unique_ptr<SessionHandler>> makeDriverSessionHandler(
    const transport::HelloInfo& hello, const SessionOptions& options);

}  // namespace flyt::backend
