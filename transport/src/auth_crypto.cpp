#include "auth_crypto.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <random>

namespace flyt::transport::auth {

Bytes randomNonce() {
  Bytes nonce(kNonceBytes);
  if (RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()), int(nonce.size())) != 1) {
    std::random_device device;  // OpenSSL's generator failed: never send a predictable nonce
    for (auto& b : nonce) b = std::byte(device());
  }
  return nonce;
}

Bytes hmacSha256(std::string_view secret, std::initializer_list<std::span<const std::byte>> parts) {
  Bytes data;
  for (auto part : parts) data.insert(data.end(), part.begin(), part.end());
  Bytes out(EVP_MAX_MD_SIZE);
  unsigned length = 0;
  HMAC(EVP_sha256(), secret.data(), int(secret.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), reinterpret_cast<unsigned char*>(out.data()), &length);
  out.resize(length);
  return out;
}

std::span<const std::byte> bytesOf(std::string_view text) {
  return {reinterpret_cast<const std::byte*>(text.data()), text.size()};
}

bool sameProof(std::span<const std::byte> got, std::span<const std::byte> expected) {
  return got.size() == expected.size() && CRYPTO_memcmp(got.data(), expected.data(), got.size()) == 0;
}

}  // namespace flyt::transport::auth
