// Endpoints name where a Flyt server listens: `tcp://host:port` (IPv4, `[v6]`, or a host name) and
// `shm://name` (iceoryx shared memory on this host; name is 1-64 of [A-Za-z0-9_.-]).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "flyt/transport/error.hpp"

namespace flyt::transport {

struct Endpoint {
  enum class Kind : std::uint8_t { kTcp, kShm };

  Kind kind = Kind::kShm;
  std::string host;       // tcp: host name or address without brackets
  std::uint16_t port = 0; // tcp: 0 means "any free port" when listening
  std::string name;       // shm: service name

  // Parses "tcp://127.0.0.1:7070", "tcp://[::1]:7070", "tcp://gpu1:7070", "shm://flyt".
  [[nodiscard]] static Result<Endpoint> parse(std::string_view text);

  // The canonical text form, parseable by parse().
  [[nodiscard]] std::string toString() const;
};

// True for a host that only this machine reaches: "localhost", "::1" (bracketed or not), 127.0.0.0/8.
// Servers warn when they listen elsewhere without a secret.
[[nodiscard]] bool isLoopbackHost(std::string_view host) noexcept;

}  // namespace flyt::transport
