// The session handshake (see schema/session.capnp): the client sends Hello, the server answers
// Welcome. A protocol-version mismatch is refused by the server with status `unsupported` and a
// message naming both versions; the client reports it as Errc::kUnsupported.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flyt/transport/channel.hpp"
#include "flyt/transport/config.hpp"

namespace flyt::transport {

struct HelloInfo {
  std::uint32_t protocolVersion = 0;
  std::uint64_t sessionId = 0;
  std::string clientName;
  std::uint32_t pid = 0;
  std::vector<std::byte> token;
};

struct WelcomeInfo {
  std::string redirect;  // non-empty: continue the session at this endpoint
};

// Sends Hello and waits up to `timeout` for Welcome. `protocolVersion` is overridable only so tests
// can play an outdated client; real callers leave the default.
[[nodiscard]] Result<WelcomeInfo> clientHandshake(Channel& channel, std::uint64_t sessionId,
                                           std::string_view clientName,
                                           std::chrono::milliseconds timeout,
                                           std::span<const std::byte> token = {},
                                           std::uint32_t protocolVersion = 0);

// Decides whether a well-formed Hello may open a session (e.g. checks its token). An error is sent
// to the client as the refusal message; a non-empty string redirects the client to that endpoint
// (Welcome.redirect); an empty one serves the session on this channel.
using AdmitSession = std::function<Result<std::string>(const HelloInfo&)>;

// Waits up to `timeout` for Hello. Answers Welcome(ok) and returns the client's Hello, or answers a
// refusal and returns the reason (kUnsupported for a version mismatch, kMalformed for anything
// that is not a Hello, admit's error when admit refuses).
[[nodiscard]] Result<HelloInfo> serverHandshake(Channel& channel, std::chrono::milliseconds timeout,
                                                const AdmitSession& admit = {});

// A channel with a completed handshake.
struct OpenedSession {
  std::unique_ptr<Channel> channel;
  std::uint64_t sessionId = 0;
  std::string endpoint;  // where the session is served (after a redirect: the worker's endpoint)
};

// Connects to `endpoint`, says Hello, and follows at most one redirect (repeating Hello with the same
// session id at the new endpoint). Every step is bounded by config.connectTimeout. `sessionId` 0
// picks a new random id; a cluster client passes the id its grant names, and the grant as `token`.
[[nodiscard]] Result<OpenedSession> openSession(std::string_view endpoint,
                                                const TransportConfig& config,
                                                std::string_view clientName,
                                                std::span<const std::byte> token = {},
                                                std::uint64_t sessionId = 0);

// A random 64-bit session id, never 0.
[[nodiscard]] std::uint64_t newSessionId();

}  // namespace flyt::transport
