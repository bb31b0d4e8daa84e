// Helpers shared by the service's files: refusals as kj exceptions, store results unwrapped.
#pragma once

#include <kj/exception.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "flyt/orchestration/records.hpp"
#include "flyt/transport/error.hpp"

namespace flyt::orchestration::detail {

// Ends the RPC call with `message` as the exception's description: what flytctl and the client show.
[[noreturn]] inline void refuse(const std::string& message) {
  kj::throwFatalException(kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__, kj::heapString(message)));
}

// A refusal that may go away by itself (no room now, the tenant's sessions all in use): the
// exception's type is OVERLOADED, so that a client can retry for a while (a session that just
// ended is released by its node's next heartbeat, a few milliseconds later).
[[noreturn]] inline void refuseForNow(const std::string& message) {
  kj::throwFatalException(kj::Exception(kj::Exception::Type::OVERLOADED, __FILE__, __LINE__, kj::heapString(message)));
}

template <class T>
T need(transport::Result<T> result) {
  if (!result) refuse(result.error().describe());
  return std::move(*result);
}

inline void need(transport::Result<void> result) {
  if (!result) refuse(result.error().describe());
}

// [A-Za-z0-9_.-]{1,64}: names of tenants and nodes, safe in logs, file names and shells.
[[nodiscard]] bool isValidName(std::string_view name);

}  // namespace flyt::orchestration::detail
