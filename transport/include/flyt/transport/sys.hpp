// The one wrapper through which Flyt makes system calls: retries EINTR and turns -1 into an Error
// that keeps errno and names the call.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>

#include "flyt/transport/error.hpp"

namespace flyt::transport {

// Calls `fn()` until it does not fail with EINTR. A return value of -1 (or MAP_FAILED for mmap-like
// calls passed through sysPtr) becomes Errc::kSystem with `what` and strerror in the message.
template <class Fn>
[[nodiscard]] auto sys(const char* what, Fn&& fn) -> Result<std::invoke_result_t<Fn>> {
  for (;;) {
    auto rc = fn();
    if (rc != -1) {
      return rc;
    }
    if (errno == EINTR) {
      continue;
    }
    const int err = errno;
    return fail(Errc::kSystem, std::string(what) + ": " + std::strerror(err), err);
  }
}

}  // namespace flyt::transport
