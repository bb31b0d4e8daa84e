// The session handshake (see schema/session.capnp): the client sends Hello, the server answers
// Welcome. A protocol-version mismatch is refused by the server with status `unsupported` and a
// message naming both versions; the client reports it as Errc::kUnsupported.
//
// Authentication (transport.auth_token, a shared secret). On channels that do not share host memory
// (TCP; shm is same-host and guarded by the files' permissions, so it is never authenticated), a
// server with a secret answers Hello with an AuthChallenge and admits the session only after the
// client proved it holds the same secret (HMAC-SHA256 over the server's fresh nonce and the session
// id; the secret never travels). It is mutual: a client with a secret sends its own nonce in Hello,
// checks the server's proof before it answers, and refuses a server that sends no challenge. The
// check comes before `admit`, so an unauthenticated peer never makes a node start a worker. Either
// side's failure is Errc::kUnauthenticated with a message that names auth_token; the refused client
// also receives "authentication failed: wrong or missing token (auth_token)". This authenticates
// the peers, it does not encrypt: on a network where others can change traffic, run TCP inside a
// VPN or SSH tunnel.
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

// The CUDA API a session's calls belong to (schema/session.capnp, SessionApi).
enum class SessionApi : std::uint8_t { kRuntime, kDriver };

struct HelloInfo {
  std::uint32_t protocolVersion = 0;
  std::uint64_t sessionId = 0;
  std::string clientName;
  std::uint32_t pid = 0;
  std::vector<std::byte> token;
  std::vector<std::byte> authNonce;  // the client's nonce for the server's proof (authentication)
  SessionApi api = SessionApi::kRuntime;
};

struct WelcomeInfo {
  std::string redirect;  // non-empty: continue the session at this endpoint
};

// Sends Hello and waits up to `timeout` (per message) for Welcome, answering an AuthChallenge with
// `authToken` on the way (see above). `protocolVersion` is overridable only so tests can play an
// outdated client; real callers leave the default.
[[nodiscard]] Result<WelcomeInfo> clientHandshake(Channel& channel, std::uint64_t sessionId,
                                           std::string_view clientName,
                                           std::chrono::milliseconds timeout,
                                           std::span<const std::byte> token = {},
                                           std::uint32_t protocolVersion = 0,
                                           std::string_view authToken = {},
                                           SessionApi api = SessionApi::kRuntime);

// Decides whether a well-formed Hello may open a session (e.g. checks its token). An error is sent
// to the client as the refusal message; a non-empty string redirects the client to that endpoint
// (Welcome.redirect); an empty one serves the session on this channel.
using AdmitSession = std::function<Result<std::string>(const HelloInfo&)>;

// Waits up to `timeout` for Hello. With a non-empty `authToken` on a channel that does not share
// host memory, challenges the client first (see above). Answers Welcome(ok) and returns the
// client's Hello, or answers a refusal and returns the reason (kUnsupported for a version mismatch,
// kMalformed for anything that is not a Hello, kUnauthenticated for a client without the secret,
// with the peer's address in the message, admit's error when admit refuses).
[[nodiscard]] Result<HelloInfo> serverHandshake(Channel& channel, std::chrono::milliseconds timeout,
                                                const AdmitSession& admit = {},
                                                std::string_view authToken = {});

// A channel with a completed handshake.
struct OpenedSession {
  std::unique_ptr<Channel> channel;
  std::uint64_t sessionId = 0;
  std::string endpoint;  // where the session is served (after a redirect: the worker's endpoint)
};

// Connects to `endpoint`, says Hello, and follows at most one redirect (repeating Hello with the same
// session id at the new endpoint), authenticating with config.authToken at each. Every step is
// bounded by config.connectTimeout. `sessionId` 0
// picks a new random id; a cluster client passes the id its grant names, and the grant as `token`.
// `api` tells the worker which method table the session's calls use.
[[nodiscard]] Result<OpenedSession> openSession(std::string_view endpoint,
                                                const TransportConfig& config,
                                                std::string_view clientName,
                                                std::span<const std::byte> token = {},
                                                std::uint64_t sessionId = 0,
                                                SessionApi api = SessionApi::kRuntime);

// A random 64-bit session id, never 0.
[[nodiscard]] std::uint64_t newSessionId();

}  // namespace flyt::transport
