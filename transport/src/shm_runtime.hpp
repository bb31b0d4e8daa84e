// Private to the shm transport: its logger and the process-wide iceoryx runtime registration.
#pragma once

#include <spdlog/logger.h>

#include "flyt/transport/error.hpp"

namespace flyt::transport::shm {

// The "flyt.shm" logger (stderr).
spdlog::logger& log();

// Registers this process with the host's RouDi once, under a unique runtime name. Checks that a
// RouDi is reachable first, because iceoryx's registration otherwise waits 60 s and then aborts.
// Thread-safe; later calls return the first call's success at once. Also bounds the process's exit
// when iceoryx's deregistration may hang (a session abandoned, or RouDi gone or replaced): exit
// handlers then get kExitGrace, after which stdio is flushed and the process ends with the status
// it was exiting with.
[[nodiscard]] Result<void> ensureRuntime();

// kUnavailable unless the RouDi this process registered with still serves. iceoryx 2.0 aborts a
// process whose port or WaitSet request reaches no RouDi, or a RouDi that started after it
// registered (a process cannot register twice), so every port creation asks this first. It
// narrows that window to the request itself. Never blocks; thread-safe.
[[nodiscard]] Result<void> checkRuntimeRouDi();

// Records that a session's peer died without closing it (its ports were abandoned; see
// shm_session.hpp). Such a process's exit is bounded (ensureRuntime): RouDi's clean-up of that peer
// may stall on a lock the peer died holding, and iceoryx's deregistration at exit waits for RouDi
// without a bound.
void noteAbandonedSession();

// Quietens iceoryx's own logger (it prints to stderr at info level) to warnings. Idempotent.
void quietIceoryxLog();

}  // namespace flyt::transport::shm
