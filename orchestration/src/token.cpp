#include "flyt/orchestration/token.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <array>
#include <cstring>
#include <span>

#include "flyt/transport/grant.hpp"

namespace flyt::orchestration {
namespace {

transport::Result<void> randomBytes(std::span<std::byte> out) {
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), int(out.size())) != 1) {
    return transport::fail(transport::Errc::kSystem, "OpenSSL's random generator failed");
  }
  return {};
}

}  // namespace

std::string hashToken(std::string_view token) {
  std::array<std::byte, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  // EVP_Digest with SHA-256 cannot fail short of memory exhaustion; an empty digest then compares
  // unequal to every stored hash, which refuses the token.
  if (EVP_Digest(token.data(), token.size(), reinterpret_cast<unsigned char*>(digest.data()), &length,
                 EVP_sha256(), nullptr) != 1) {
    return {};
  }
  return transport::toHex(std::span<const std::byte>(digest.data(), length));
}

bool tokenHashesEqual(std::string_view a, std::string_view b) {
  if (a.size() != b.size() || a.empty()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

transport::Result<std::string> randomToken() {
  std::array<std::byte, 16> bytes{};
  if (auto ok = randomBytes(bytes); !ok) return std::unexpected(ok.error());
  return transport::toHex(bytes);
}

transport::Result<std::uint64_t> randomSessionId() {
  std::uint64_t id = 0;
  while (id == 0) {
    std::array<std::byte, sizeof(id)> bytes{};
    if (auto ok = randomBytes(bytes); !ok) return std::unexpected(ok.error());
    std::memcpy(&id, bytes.data(), sizeof(id));
  }
  return id;
}

}  // namespace flyt::orchestration
