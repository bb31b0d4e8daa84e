// The cryptographic pieces both challenge/responses of Flyt share: the session handshake's TCP
// authentication (handshake.cpp) and the orchestrator's connection preamble
// (orchestrator_auth.cpp). Private to transport/.
//
// Threading: every function is reentrant (OpenSSL's one-shot HMAC and RAND_bytes).
#pragma once

#include <cstddef>
#include <initializer_list>
#include <span>
#include <string_view>
#include <vector>

namespace flyt::transport::auth {

using Bytes = std::vector<std::byte>;

// Nonces and HMAC-SHA256 proofs are 32 bytes.
inline constexpr std::size_t kNonceBytes = 32;
inline constexpr std::size_t kProofBytes = 32;

// kNonceBytes from OpenSSL's generator (never predictable: falls back to std::random_device).
[[nodiscard]] Bytes randomNonce();

// HMAC-SHA256(secret, concatenation of `parts`): kProofBytes.
[[nodiscard]] Bytes hmacSha256(std::string_view secret, std::initializer_list<std::span<const std::byte>> parts);

// The bytes of `text`, for hmacSha256's parts (labels).
[[nodiscard]] std::span<const std::byte> bytesOf(std::string_view text);

// Equal sizes and contents, compared in constant time (CRYPTO_memcmp): a mismatch's position never
// shows in the time taken.
[[nodiscard]] bool sameProof(std::span<const std::byte> got, std::span<const std::byte> expected);

}  // namespace flyt::transport::auth
