// Who is on the other end of a connection to flyt-orchestrator: the preamble that every connection
// to the orchestrator's port starts with, before Cap'n Proto RPC (schema/cluster.capnp) runs on
// the same stream.
//
// Roles. Each connection says which of three roles it plays, and the orchestrator lets it call only
// that role's methods (orchestration/include/flyt/orchestration/access.hpp holds the table):
// - admin:  flytctl. Needs the orchestrator's admin_token when one is configured.
// - node:   flyt-node's cluster agent (registerNode, heartbeat). Needs node_token when configured.
// - tenant: an application asking for a placement (openSession). It proves itself per call with its
//           tenant's token, so the connection needs no secret.
// A role whose token the orchestrator does not have needs no secret (the behaviour before roles
// existed); the orchestrator warns at start when such a role is reachable from other hosts.
//
// Wire format, version 1 (integers little-endian, sizes in bytes):
//   orchestrator -> client, at once on accept (44):
//     magic "FLYTORCH" (8) | version u32 (4) | server nonce (32, fresh per connection)
//   client -> orchestrator (77):
//     magic "FLYTPEER" (8) | version u32 (4) | role u8 (1: admin, 2: node, 3: tenant) |
//     client nonce (32) | proof (32)
//       proof = HMAC-SHA256(secret, "flyt-orchestrator-v1 client" || server nonce || client nonce || role)
//       or 32 zero bytes from a client without a secret for its role
//   orchestrator -> client, either
//     accepted (33): 0 u8 | proof (32)
//       proof = HMAC-SHA256(secret, "flyt-orchestrator-v1 server" || client nonce || server nonce || role)
//       or zeros when the orchestrator has no secret for the role
//     refused (3 + n): 1 u8 | n u16 (n <= kMaxRefusalBytes) | reason (n bytes of UTF-8), then it closes
//   Cap'n Proto RPC (two-party, the client is CLIENT) follows on the same stream after "accepted".
//
// Both sides check the other in constant time. It is mutual: a client with a secret refuses an
// orchestrator whose proof is wrong or zero (one without the secret, or an impostor). A secret
// never travels, and a proof recorded on one connection is worthless on another (both nonces are
// fresh). The orchestrator reads at most 77 bytes before it decides and bounds the whole preamble
// (kPreambleTimeout), so a silent, slow or garbage-sending peer is dropped and holds nothing. This
// authenticates, it does not encrypt: run the orchestrator's port on a private network or a VPN.
//
// Threading: the promises run on the calling thread's KJ event loop; `stream` and `timer` must
// outlive them.
#pragma once

#include <chrono>
#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>

#include <kj/async-io.h>
#include <kj/timer.h>

#include "flyt/transport/error.hpp"

namespace flyt::transport {

enum class OrchestratorRole : std::uint8_t { kAdmin = 1, kNode = 2, kTenant = 3 };

// "admin", "node", "tenant".
[[nodiscard]] std::string_view roleName(OrchestratorRole role) noexcept;

inline constexpr std::uint32_t kPreambleVersion = 1;
// The orchestrator drops a connection whose preamble is not complete within this.
inline constexpr std::chrono::milliseconds kPreambleTimeout{5000};
// Longest refusal reason on the wire.
inline constexpr std::size_t kMaxRefusalBytes = 1024;

// The orchestrator's secrets, by role; empty: the role needs none. The tenant role never has one.
struct RoleSecrets {
  std::string admin;
  std::string node;
  [[nodiscard]] std::string_view of(OrchestratorRole role) const noexcept;
};

// Why the orchestrator refused a connection: the role it claimed (when it got that far) and the
// reason for the orchestrator's log ("wrong token", "missing token", "not a Flyt client: ...").
struct PreambleRefusal {
  std::optional<OrchestratorRole> role;
  std::string reason;
};

// Orchestrator side: greets the peer on `stream`, reads its preamble, checks it against `secrets`,
// and answers. Resolves to the authenticated role (RPC may start), or to the refusal (the peer was
// told why, unless it was silent or gone; close the stream). Never rejects: timeouts (`bound`) and
// disconnects are refusals too.
[[nodiscard]] kj::Promise<std::expected<OrchestratorRole, PreambleRefusal>> acceptPreamble(
    kj::AsyncIoStream& stream, kj::Timer& timer, const RoleSecrets& secrets,
    std::chrono::milliseconds bound = kPreambleTimeout);

// Client side: reads the orchestrator's greeting, sends the preamble for `role` (proving `secret`,
// if not empty), and checks the answer within `bound`. Errors (never rejects): kUnauthenticated
// "refused this connection: <the orchestrator's reason>" or "did not prove it holds ...",
// kMalformed for a peer that is not an orchestrator, kUnsupported for another preamble version,
// kTimeout, kDisconnected. Messages do not name the peer; the caller prefixes its address.
[[nodiscard]] kj::Promise<Result<void>> offerPreamble(kj::AsyncIoStream& stream, kj::Timer& timer,
                                                      OrchestratorRole role, std::string secret,
                                                      std::chrono::milliseconds bound);

// A secret of the orchestrator's connection preamble: at least kMinAuthTokenBytes (config.hpp).
// `what` names the setting in the error ("admin_token").
[[nodiscard]] Result<void> checkOrchestratorSecret(std::string_view secret, std::string_view what);

// Reads a token file as readAuthTokenFile does (owned by this user, mode 0600 or 0400, white space
// trimmed) and checks it with checkOrchestratorSecret. Errors name `what` ("node_token_file") and
// the file.
[[nodiscard]] Result<std::string> readOrchestratorSecret(const std::string& path, std::string_view what);

}  // namespace flyt::transport
