// Errors of the transport layer.
//
// Every fallible transport function returns `Result<T>` = std::expected<T, Error>. An Error carries a
// code a program can branch on and a message a person can act on (what failed, with which values).
#pragma once

#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

namespace flyt::transport {

enum class Errc : std::uint8_t {
  kDisconnected,     // the peer closed, crashed or was never there
  kTimeout,          // the peer stayed silent past the configured bound
  kMalformed,        // bytes on the wire or in shared memory failed validation
  kUnsupported,      // protocol version or feature the other side does not speak
  kTooLarge,         // a frame or payload exceeds a configured or structural limit
  kOutOfRange,       // an offset/length outside a segment or buffer
  kInvalidArgument,  // a caller passed something unusable (bad endpoint, bad config value)
  kUnavailable,      // a required service is not running (e.g. no RouDi and none may be started)
  kSystem,           // a system call failed; Error::sysErrno says which errno
  kUnauthenticated,  // a peer did not prove it holds the shared secret (auth_token), or refused ours
  kBusy,             // the server is at capacity right now; the same request may succeed later
};

[[nodiscard]] std::string_view errcName(Errc code) noexcept;

struct Error {
  Errc code;
  std::string message;
  int sysErrno = 0;  // errno of the failed system call, 0 when not a system error

  // "timeout: no reply from shm://node0 within 2000 ms"
  [[nodiscard]] std::string describe() const;
};

template <class T>
using Result = std::expected<T, Error>;

[[nodiscard]] inline std::unexpected<Error> fail(Errc code, std::string message, int sysErrno = 0) {
  return std::unexpected<Error>(Error{code, std::move(message), sysErrno});
}

}  // namespace flyt::transport
