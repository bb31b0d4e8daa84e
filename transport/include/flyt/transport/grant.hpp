// Session grants: what flyt-orchestrator placed (node, GPU, SM share, memory, expiry), signed with
// the orchestrator's Ed25519 key, and checked by the node before it admits the session.
//
// Wire format: a serialised wire::SignedGrant (schema/cluster.capnp) whose `grant` holds a
// serialised wire::Grant and whose `signature` is Ed25519 over exactly those bytes. The node learns
// the orchestrator's public key when it registers. Crypto is OpenSSL's (libcrypto).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "flyt/transport/error.hpp"

namespace flyt::transport {

struct GrantInfo {
  std::uint64_t sessionId = 0;
  std::string tenant;
  std::string node;
  std::string gpuUuid;
  std::uint32_t smPercent = 100;
  std::uint64_t memoryBytes = 0;
  std::int64_t issuedAtMs = 0;
  std::int64_t expiresAtMs = 0;
  std::uint32_t idleTimeoutS = 0;
};

// The orchestrator's key pair. Movable, not copyable; thread-safe for concurrent sign().
class GrantSigner {
 public:
  // A new random key pair.
  [[nodiscard]] static Result<GrantSigner> generate();
  // The key pair from its 32-byte raw private key (as privateKey() returned it).
  [[nodiscard]] static Result<GrantSigner> fromPrivateKey(std::span<const std::byte> raw);

  GrantSigner(GrantSigner&&) noexcept;
  GrantSigner& operator=(GrantSigner&&) noexcept;
  ~GrantSigner();

  [[nodiscard]] std::vector<std::byte> privateKey() const;  // 32 raw bytes; keep it secret
  [[nodiscard]] std::vector<std::byte> publicKey() const;   // 32 raw bytes

  // A serialised SignedGrant of `grant`.
  [[nodiscard]] Result<std::vector<std::byte>> sign(const GrantInfo& grant) const;

  struct Key;

 private:
  explicit GrantSigner(std::unique_ptr<Key> key);
  std::unique_ptr<Key> m_key;
};

// Checks a serialised SignedGrant against the orchestrator's 32-byte public key and returns what it
// grants. kMalformed for undecodable bytes, kInvalidArgument for a bad signature; expiry and the
// node's name are the caller's to check (see checkGrantFor).
[[nodiscard]] Result<GrantInfo> verifyGrant(std::span<const std::byte> publicKey,
                                            std::span<const std::byte> signedGrant);

// verifyGrant, then: the grant names `node` and `sessionId`, and `nowMs` is before its expiry.
// The error message says which check failed, for the node's log and the application.
[[nodiscard]] Result<GrantInfo> checkGrantFor(std::span<const std::byte> publicKey,
                                              std::span<const std::byte> signedGrant, std::string_view node,
                                              std::uint64_t sessionId, std::int64_t nowMs);

// Milliseconds since the Unix epoch (the clock grants use).
[[nodiscard]] std::int64_t unixMillis();

// Lower-case hex of bytes, and back (for keys in logs, files and configuration).
[[nodiscard]] std::string toHex(std::span<const std::byte> bytes);
[[nodiscard]] Result<std::vector<std::byte>> fromHex(std::string_view text);

}  // namespace flyt::transport
