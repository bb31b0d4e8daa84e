#include "flyt/transport/error.hpp"

namespace flyt::transport {

std::string_view errcName(Errc code) noexcept {
  switch (code) {
    case Errc::kDisconnected: return "disconnected";
    case Errc::kTimeout: return "timeout";
    case Errc::kMalformed: return "malformed";
    case Errc::kUnsupported: return "unsupported";
    case Errc::kTooLarge: return "too large";
    case Errc::kOutOfRange: return "out of range";
    case Errc::kInvalidArgument: return "invalid argument";
    case Errc::kUnavailable: return "unavailable";
    case Errc::kSystem: return "system error";
    case Errc::kUnauthenticated: return "unauthenticated";
    case Errc::kBusy: return "busy";
  }
  return "unknown";
}

std::string Error::describe() const {
  std::string out(errcName(code));
  out += ": ";
  out += message;
  return out;
}

}  // namespace flyt::transport
