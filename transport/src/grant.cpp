#include "flyt/transport/grant.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fmt/format.h>
#include <kj/exception.h>
#include <openssl/evp.h>

#include <chrono>
#include <cstring>

#include "flyt/wire/cluster.capnp.h"

namespace flyt::transport {
namespace {

constexpr std::size_t kKeyBytes = 32;
constexpr std::size_t kSignatureBytes = 64;
// A grant is a few hundred bytes; anything much larger is not one.
constexpr std::size_t kMaxSignedGrantBytes = 16 << 10;

struct PkeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

std::vector<std::byte> rawKey(EVP_PKEY* key, bool isPrivate) {
  std::vector<std::byte> out(kKeyBytes);
  std::size_t length = out.size();
  auto* data = reinterpret_cast<unsigned char*>(out.data());
  const int ok = isPrivate ? EVP_PKEY_get_raw_private_key(key, data, &length)
                           : EVP_PKEY_get_raw_public_key(key, data, &length);
  if (ok != 1) return {};
  out.resize(length);
  return out;
}

kj::ArrayPtr<const capnp::word> asWords(std::span<const std::byte> bytes, kj::Array<capnp::word>& storage) {
  // Copy into word-aligned storage: the caller's bytes need not be aligned.
  storage = kj::heapArray<capnp::word>((bytes.size() + sizeof(capnp::word) - 1) / sizeof(capnp::word));
  std::memcpy(storage.begin(), bytes.data(), bytes.size());
  return storage.asPtr();
}

std::vector<std::byte> serialise(capnp::MessageBuilder& builder) {
  auto words = capnp::messageToFlatArray(builder);
  auto bytes = words.asBytes();
  return {reinterpret_cast<const std::byte*>(bytes.begin()), reinterpret_cast<const std::byte*>(bytes.end())};
}

}  // namespace

struct GrantSigner::Key {
  Pkey pkey;
};

GrantSigner::GrantSigner(std::unique_ptr<Key> key) : m_key(std::move(key)) {}
GrantSigner::GrantSigner(GrantSigner&&) noexcept = default;
GrantSigner& GrantSigner::operator=(GrantSigner&&) noexcept = default;
GrantSigner::~GrantSigner() = default;

Result<GrantSigner> GrantSigner::generate() {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (key == nullptr) return fail(Errc::kSystem, "OpenSSL could not generate an Ed25519 key");
  return GrantSigner(std::make_unique<Key>(Key{Pkey(key)}));
}

Result<GrantSigner> GrantSigner::fromPrivateKey(std::span<const std::byte> raw) {
  if (raw.size() != kKeyBytes) {
    return fail(Errc::kInvalidArgument, fmt::format("an Ed25519 private key has {} bytes, not {}", kKeyBytes, raw.size()));
  }
  EVP_PKEY* key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr,
                                               reinterpret_cast<const unsigned char*>(raw.data()), raw.size());
  if (key == nullptr) return fail(Errc::kInvalidArgument, "OpenSSL rejected the Ed25519 private key");
  return GrantSigner(std::make_unique<Key>(Key{Pkey(key)}));
}

std::vector<std::byte> GrantSigner::privateKey() const { return rawKey(m_key->pkey.get(), true); }
std::vector<std::byte> GrantSigner::publicKey() const { return rawKey(m_key->pkey.get(), false); }

Result<std::vector<std::byte>> GrantSigner::sign(const GrantInfo& info) const {
  capnp::MallocMessageBuilder grantMessage;
  auto grant = grantMessage.initRoot<wire::Grant>();
  grant.setSessionId(info.sessionId);
  grant.setTenant(info.tenant);
  grant.setNode(info.node);
  grant.setGpuUuid(info.gpuUuid);
  grant.setSmPercent(info.smPercent);
  grant.setMemoryBytes(info.memoryBytes);
  grant.setIssuedAtMs(info.issuedAtMs);
  grant.setExpiresAtMs(info.expiresAtMs);
  grant.setIdleTimeoutS(info.idleTimeoutS);
  const auto grantBytes = serialise(grantMessage);

  MdCtx ctx(EVP_MD_CTX_new());
  std::vector<std::byte> signature(kSignatureBytes);
  std::size_t length = signature.size();
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, m_key->pkey.get()) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &length,
                     reinterpret_cast<const unsigned char*>(grantBytes.data()), grantBytes.size()) != 1) {
    return fail(Errc::kSystem, "OpenSSL could not sign the grant");
  }
  signature.resize(length);

  capnp::MallocMessageBuilder signedMessage;
  auto signedGrant = signedMessage.initRoot<wire::SignedGrant>();
  signedGrant.setGrant(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(grantBytes.data()), grantBytes.size()));
  signedGrant.setSignature(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(signature.data()), signature.size()));
  return serialise(signedMessage);
}

Result<GrantInfo> verifyGrant(std::span<const std::byte> publicKey, std::span<const std::byte> signedGrant) {
  if (publicKey.size() != kKeyBytes) return fail(Errc::kUnavailable, "no orchestrator key to verify grants with");
  if (signedGrant.empty()) return fail(Errc::kInvalidArgument, "no grant (this node admits only sessions the orchestrator placed)");
  if (signedGrant.size() > kMaxSignedGrantBytes || signedGrant.size() % sizeof(capnp::word) != 0) {
    return fail(Errc::kMalformed, fmt::format("a {}-byte token is not a grant", signedGrant.size()));
  }
  GrantInfo info;
  std::string problem;
  kj::Maybe<kj::Exception> thrown = kj::runCatchingExceptions([&] {
    kj::Array<capnp::word> outerWords;
    capnp::ReaderOptions options;
    options.traversalLimitInWords = kMaxSignedGrantBytes / sizeof(capnp::word);
    capnp::FlatArrayMessageReader outer(asWords(signedGrant, outerWords), options);
    auto signedRoot = outer.getRoot<wire::SignedGrant>();
    auto grantBytes = signedRoot.getGrant();
    auto signature = signedRoot.getSignature();
    MdCtx ctx(EVP_MD_CTX_new());
    Pkey key(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr,
                                         reinterpret_cast<const unsigned char*>(publicKey.data()), publicKey.size()));
    if (!ctx || !key || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1 ||
        EVP_DigestVerify(ctx.get(), signature.begin(), signature.size(), grantBytes.begin(), grantBytes.size()) != 1) {
      problem = "the grant's signature does not verify with the orchestrator's key (forged or from another orchestrator)";
      return;
    }
    if (grantBytes.size() % sizeof(capnp::word) != 0) {
      problem = "the signed grant is not a whole message";
      return;
    }
    kj::Array<capnp::word> innerWords;
    capnp::FlatArrayMessageReader inner(
        asWords({reinterpret_cast<const std::byte*>(grantBytes.begin()), grantBytes.size()}, innerWords), options);
    auto grant = inner.getRoot<wire::Grant>();
    info.sessionId = grant.getSessionId();
    info.tenant = grant.getTenant().cStr();
    info.node = grant.getNode().cStr();
    info.gpuUuid = grant.getGpuUuid().cStr();
    info.smPercent = grant.getSmPercent();
    info.memoryBytes = grant.getMemoryBytes();
    info.issuedAtMs = grant.getIssuedAtMs();
    info.expiresAtMs = grant.getExpiresAtMs();
    info.idleTimeoutS = grant.getIdleTimeoutS();
  });
  KJ_IF_MAYBE (e, thrown) {
    return fail(Errc::kMalformed, fmt::format("undecodable grant: {}", e->getDescription().cStr()));
  }
  if (!problem.empty()) return fail(Errc::kInvalidArgument, problem);
  if (info.smPercent == 0 || info.smPercent > 100) {
    return fail(Errc::kMalformed, fmt::format("the grant's SM share {}% is out of range", info.smPercent));
  }
  return info;
}

Result<GrantInfo> checkGrantFor(std::span<const std::byte> publicKey, std::span<const std::byte> signedGrant,
                                std::string_view node, std::uint64_t sessionId, std::int64_t nowMs) {
  auto grant = verifyGrant(publicKey, signedGrant);
  if (!grant) return grant;
  if (grant->node != node) {
    return fail(Errc::kInvalidArgument, fmt::format("the grant is for node '{}', not '{}'", grant->node, node));
  }
  if (grant->sessionId != sessionId) {
    return fail(Errc::kInvalidArgument,
                fmt::format("the grant is for session {:016x}, not {:016x}", grant->sessionId, sessionId));
  }
  if (nowMs >= grant->expiresAtMs) {
    return fail(Errc::kInvalidArgument,
                fmt::format("the grant expired {} ms ago (ask the orchestrator for a new one)", nowMs - grant->expiresAtMs));
  }
  return grant;
}

std::int64_t unixMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string toHex(std::span<const std::byte> bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (auto b : bytes) out += fmt::format("{:02x}", static_cast<unsigned>(b));
  return out;
}

Result<std::vector<std::byte>> fromHex(std::string_view text) {
  if (text.size() % 2 != 0) return fail(Errc::kInvalidArgument, "hex text of odd length");
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::vector<std::byte> out;
  out.reserve(text.size() / 2);
  for (std::size_t i = 0; i < text.size(); i += 2) {
    const int hi = digit(text[i]), lo = digit(text[i + 1]);
    if (hi < 0 || lo < 0) return fail(Errc::kInvalidArgument, fmt::format("'{}' is not hex", text));
    out.push_back(static_cast<std::byte>(hi * 16 + lo));
  }
  return out;
}

}  // namespace flyt::transport
