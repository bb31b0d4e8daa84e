// Tenant tokens and session ids. The orchestrator keeps only a token's SHA-256 (hex); a token is
// shown once, when flytctl adds the tenant or sets a new one.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "flyt/transport/error.hpp"

namespace flyt::orchestration {

// Lower-case hex SHA-256 of the token (64 characters).
[[nodiscard]] std::string hashToken(std::string_view token);

// True when both hashes are equal, in time independent of where they differ (so a wrong token
// learns nothing from how long the refusal took).
[[nodiscard]] bool tokenHashesEqual(std::string_view a, std::string_view b);

// 32 random hex characters (128 bits) from OpenSSL's generator.
[[nodiscard]] transport::Result<std::string> randomToken();

// A random non-zero session id.
[[nodiscard]] transport::Result<std::uint64_t> randomSessionId();

}  // namespace flyt::orchestration
