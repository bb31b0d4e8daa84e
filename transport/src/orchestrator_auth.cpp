#include "flyt/transport/orchestrator_auth.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "auth_crypto.hpp"
#include "flyt/transport/config.hpp"

namespace flyt::transport {
namespace {

using auth::Bytes;
using Verdict = std::expected<OrchestratorRole, PreambleRefusal>;

constexpr std::string_view kServerMagic = "FLYTORCH";
constexpr std::string_view kClientMagic = "FLYTPEER";
constexpr std::size_t kMagicBytes = 8;
constexpr std::size_t kGreetingBytes = kMagicBytes + 4 + auth::kNonceBytes;                  // 44
constexpr std::size_t kHelloBytes = kMagicBytes + 4 + 1 + auth::kNonceBytes + auth::kProofBytes;  // 77
constexpr std::size_t kRoleAt = kMagicBytes + 4;
constexpr std::size_t kNonceAt = kRoleAt + 1;
constexpr std::size_t kProofAt = kNonceAt + auth::kNonceBytes;
constexpr std::uint8_t kAccepted = 0;
constexpr std::uint8_t kRefused = 1;
constexpr std::string_view kClientLabel = "flyt-orchestrator-v1 client";
constexpr std::string_view kServerLabel = "flyt-orchestrator-v1 server";

static_assert(kServerMagic.size() == kMagicBytes && kClientMagic.size() == kMagicBytes);
static_assert(kProofAt + auth::kProofBytes == kHelloBytes);

void putU32(std::byte* at, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) at[i] = std::byte(value >> (8 * i));
}

std::uint32_t getU32(const std::byte* at) {
  std::uint32_t value = 0;
  for (int i = 0; i < 4; ++i) value |= std::uint32_t(at[i]) << (8 * i);
  return value;
}

bool hasMagic(const std::byte* at, std::string_view magic) { return std::memcmp(at, magic.data(), kMagicBytes) == 0; }

bool allZero(std::span<const std::byte> bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{0}; });
}

// "47 45 54 20 2f 20 48 54" (what a peer sent instead of a magic, for the log).
std::string hexBytes(std::span<const std::byte> bytes) {
  std::string text;
  for (auto b : bytes) text += fmt::format("{}{:02x}", text.empty() ? "" : " ", unsigned(b));
  return text;
}

// Where a refused client's owner sets the role's secret.
std::string_view settingOf(OrchestratorRole role) {
  return role == OrchestratorRole::kAdmin
             ? "flytctl --token-file FILE, FLYT_ADMIN_TOKEN_FILE or FLYT_ADMIN_TOKEN"
             : "[node] orchestrator_token_file in node.toml, FLYT_NODE_TOKEN_FILE or FLYT_NODE_TOKEN";
}

std::string_view tokenKeyOf(OrchestratorRole role) {
  return role == OrchestratorRole::kAdmin ? "admin_token" : "node_token";
}

std::optional<OrchestratorRole> roleOf(std::byte value) {
  switch (std::uint8_t(value)) {
    case 1: return OrchestratorRole::kAdmin;
    case 2: return OrchestratorRole::kNode;
    case 3: return OrchestratorRole::kTenant;
    default: return std::nullopt;
  }
}

// HMAC over the label, the two nonces in the order the label's side uses, and the role.
Bytes proofOf(std::string_view secret, std::string_view label, std::span<const std::byte> firstNonce,
              std::span<const std::byte> secondNonce, OrchestratorRole role) {
  const std::array<std::byte, 1> roleByte{std::byte(role)};
  return auth::hmacSha256(secret, {auth::bytesOf(label), firstNonce, secondNonce, roleByte});
}

struct ServerState {
  kj::AsyncIoStream& stream;
  RoleSecrets secrets;
  Bytes nonce = auth::randomNonce();
  std::array<std::byte, kGreetingBytes> greeting{};
  std::array<std::byte, kHelloBytes> hello{};
  Bytes answer;

  ServerState(kj::AsyncIoStream& s, RoleSecrets r) : stream(s), secrets(std::move(r)) {
    std::memcpy(greeting.data(), kServerMagic.data(), kMagicBytes);
    putU32(greeting.data() + kMagicBytes, kPreambleVersion);
    std::copy(nonce.begin(), nonce.end(), greeting.begin() + kMagicBytes + 4);
  }

  // Tells the peer `told` (best effort: it may be gone) and resolves to the refusal for the log.
  kj::Promise<Verdict> refuse(std::optional<OrchestratorRole> role, std::string logged, std::string told) {
    told.resize(std::min(told.size(), kMaxRefusalBytes));
    answer = {std::byte(kRefused), std::byte(told.size() & 0xff), std::byte(told.size() >> 8)};
    const auto text = auth::bytesOf(told);
    answer.insert(answer.end(), text.begin(), text.end());
    Verdict verdict = std::unexpected(PreambleRefusal{role, std::move(logged)});
    return stream.write(answer.data(), answer.size())
        .then([] {}, [](kj::Exception&&) {})
        .then([verdict = std::move(verdict)]() mutable { return std::move(verdict); });
  }

  kj::Promise<Verdict> decide() {
    const std::uint32_t version = getU32(hello.data() + kMagicBytes);
    if (version != kPreambleVersion) {
      const auto why = fmt::format("the client speaks orchestrator preamble version {}; this orchestrator speaks {}",
                                   version, kPreambleVersion);
      return refuse(std::nullopt, why, why);
    }
    const auto role = roleOf(hello[kRoleAt]);
    if (!role) {
      return refuse(std::nullopt, fmt::format("unknown role {}", unsigned(hello[kRoleAt])),
                    fmt::format("unknown role {} (1 admin, 2 node, 3 tenant)", unsigned(hello[kRoleAt])));
    }
    const std::span<const std::byte> clientNonce(hello.data() + kNonceAt, auth::kNonceBytes);
    const std::span<const std::byte> proof(hello.data() + kProofAt, auth::kProofBytes);
    const std::string_view secret = secrets.of(*role);
    Bytes serverProof(auth::kProofBytes);
    if (!secret.empty()) {
      const auto name = roleName(*role);
      if (allZero(proof)) {
        return refuse(role, "missing token",
                      fmt::format("the {} role needs this orchestrator's {} token and the connection sent none ({})",
                                  name, name, settingOf(*role)));
      }
      if (!auth::sameProof(proof, proofOf(secret, kClientLabel, nonce, clientNonce, *role))) {
        return refuse(role, "wrong token",
                      fmt::format("wrong {} token ({} must hold this orchestrator's {})", name, settingOf(*role),
                                  tokenKeyOf(*role)));
      }
      serverProof = proofOf(secret, kServerLabel, clientNonce, nonce, *role);
    }
    answer = {std::byte(kAccepted)};
    answer.insert(answer.end(), serverProof.begin(), serverProof.end());
    return stream.write(answer.data(), answer.size()).then([role]() -> Verdict { return *role; });
  }
};

struct ClientState {
  kj::AsyncIoStream& stream;
  OrchestratorRole role;
  std::string secret;
  Bytes nonce = auth::randomNonce();
  std::array<std::byte, kGreetingBytes> greeting{};
  std::array<std::byte, kHelloBytes> hello{};
  std::array<std::byte, 1 + auth::kProofBytes> answer{};
  std::array<std::byte, 2> length{};
  std::string reason;

  kj::Promise<Result<void>> greet() {
    if (!hasMagic(greeting.data(), kServerMagic)) {
      return Result<void>(fail(Errc::kMalformed,
                               fmt::format("it is not a flyt-orchestrator (it greeted with {})",
                                           hexBytes(std::span(greeting.data(), kMagicBytes)))));
    }
    if (const auto version = getU32(greeting.data() + kMagicBytes); version != kPreambleVersion) {
      return Result<void>(fail(Errc::kUnsupported,
                               fmt::format("it speaks orchestrator preamble version {}; this client speaks {}",
                                           version, kPreambleVersion)));
    }
    const std::span<const std::byte> serverNonce(greeting.data() + kMagicBytes + 4, auth::kNonceBytes);
    std::memcpy(hello.data(), kClientMagic.data(), kMagicBytes);
    putU32(hello.data() + kMagicBytes, kPreambleVersion);
    hello[kRoleAt] = std::byte(role);
    std::copy(nonce.begin(), nonce.end(), hello.begin() + kNonceAt);
    if (!secret.empty()) {
      const auto proof = proofOf(secret, kClientLabel, serverNonce, nonce, role);
      std::copy(proof.begin(), proof.end(), hello.begin() + kProofAt);
    }
    return stream.write(hello.data(), hello.size())
        .then([this] { return stream.read(answer.data(), 1); })
        .then([this] { return answer[0] == std::byte(kAccepted) ? accepted() : refused(); });
  }

  kj::Promise<Result<void>> accepted() {
    return stream.read(answer.data() + 1, auth::kProofBytes).then([this]() -> Result<void> {
      if (secret.empty()) return {};
      const std::span<const std::byte> proof(answer.data() + 1, auth::kProofBytes);
      const std::span<const std::byte> serverNonce(greeting.data() + kMagicBytes + 4, auth::kNonceBytes);
      if (auth::sameProof(proof, proofOf(secret, kServerLabel, nonce, serverNonce, role))) return {};
      const auto name = roleName(role);
      if (allZero(proof)) {
        return fail(Errc::kUnauthenticated,
                    fmt::format("it did not prove it holds the {} token this client has: it has no {} configured, "
                                "or it is not the orchestrator you meant",
                                name, tokenKeyOf(role)));
      }
      return fail(Errc::kUnauthenticated,
                  fmt::format("its proof of the {} token is wrong: its {} differs from this client's, or it is not "
                              "the orchestrator you meant",
                              name, tokenKeyOf(role)));
    });
  }

  kj::Promise<Result<void>> refused() {
    if (answer[0] != std::byte(kRefused)) {
      return Result<void>(fail(Errc::kMalformed,
                               fmt::format("it answered the preamble with status {}", unsigned(answer[0]))));
    }
    return stream.read(length.data(), length.size()).then([this]() -> kj::Promise<Result<void>> {
      const std::size_t bytes = std::size_t(length[0]) | std::size_t(length[1]) << 8;
      if (bytes > kMaxRefusalBytes) {
        return Result<void>(fail(Errc::kMalformed, fmt::format("it refused with a {}-byte reason", bytes)));
      }
      reason.resize(bytes);
      return stream.read(reason.data(), bytes).then([this]() -> Result<void> {
        return fail(Errc::kUnauthenticated, fmt::format("refused this connection: {}", reason));
      });
    });
  }
};

}  // namespace

std::string_view roleName(OrchestratorRole role) noexcept {
  switch (role) {
    case OrchestratorRole::kAdmin: return "admin";
    case OrchestratorRole::kNode: return "node";
    case OrchestratorRole::kTenant: break;
  }
  return "tenant";
}

std::string_view RoleSecrets::of(OrchestratorRole role) const noexcept {
  switch (role) {
    case OrchestratorRole::kAdmin: return admin;
    case OrchestratorRole::kNode: return node;
    case OrchestratorRole::kTenant: break;
  }
  return {};
}

kj::Promise<std::expected<OrchestratorRole, PreambleRefusal>> acceptPreamble(kj::AsyncIoStream& stream,
                                                                              kj::Timer& timer,
                                                                              const RoleSecrets& secrets,
                                                                              std::chrono::milliseconds bound) {
  auto state = kj::heap<ServerState>(stream, secrets);
  ServerState& s = *state;
  // The magic first: a peer that speaks something else is refused at once, not after the bound.
  auto work = s.stream.write(s.greeting.data(), s.greeting.size())
                  .then([&s] { return s.stream.read(s.hello.data(), kMagicBytes); })
                  .then([&s]() -> kj::Promise<Verdict> {
                    if (!hasMagic(s.hello.data(), kClientMagic)) {
                      return s.refuse(std::nullopt,
                                      fmt::format("not a Flyt client: its first bytes are {}",
                                                  hexBytes(std::span(s.hello.data(), kMagicBytes))),
                                      "this is flyt-orchestrator: a client must start with its connection preamble "
                                      "(Flyt's own clients do; a client older than the preamble must be updated)");
                    }
                    return s.stream.read(s.hello.data() + kMagicBytes, kHelloBytes - kMagicBytes).then([&s] {
                      return s.decide();
                    });
                  })
                  .catch_([](kj::Exception&& e) -> Verdict {
                    return std::unexpected(PreambleRefusal{
                        std::nullopt, fmt::format("it left during the preamble ({})", e.getDescription().cStr())});
                  });
  auto late = timer.afterDelay(bound.count() * kj::MILLISECONDS).then([bound]() -> Verdict {
    return std::unexpected(
        PreambleRefusal{std::nullopt, fmt::format("no complete preamble within {} ms", bound.count())});
  });
  return work.exclusiveJoin(kj::mv(late)).attach(kj::mv(state));
}

kj::Promise<Result<void>> offerPreamble(kj::AsyncIoStream& stream, kj::Timer& timer, OrchestratorRole role,
                                        std::string secret, std::chrono::milliseconds bound) {
  auto state = kj::heap<ClientState>(ClientState{stream, role, std::move(secret)});
  ClientState& s = *state;
  auto work = s.stream.read(s.greeting.data(), s.greeting.size())
                  .then([&s] { return s.greet(); })
                  .catch_([](kj::Exception&& e) -> Result<void> {
                    return fail(Errc::kDisconnected, fmt::format("the connection ended during its preamble ({})",
                                                                 e.getDescription().cStr()));
                  });
  auto late = timer.afterDelay(bound.count() * kj::MILLISECONDS).then([bound]() -> Result<void> {
    return fail(Errc::kTimeout,
                fmt::format("no complete answer to the connection preamble within {} ms (is it a flyt-orchestrator?)",
                            bound.count()));
  });
  return work.exclusiveJoin(kj::mv(late)).attach(kj::mv(state));
}

Result<void> checkOrchestratorSecret(std::string_view secret, std::string_view what) {
  if (secret.size() < kMinAuthTokenBytes) {
    return fail(Errc::kInvalidArgument,
                fmt::format("{} is {} bytes; it must have at least {} (e.g. `openssl rand -hex 32`)", what,
                            secret.size(), kMinAuthTokenBytes));
  }
  return {};
}

Result<std::string> readOrchestratorSecret(const std::string& path, std::string_view what) {
  auto secret = readAuthTokenFile(path);
  if (!secret) {
    // readAuthTokenFile names its own setting; name the one the caller read instead.
    auto error = secret.error();
    constexpr std::string_view kItsName = "auth_token_file ";
    if (error.message.starts_with(kItsName)) error.message.erase(0, kItsName.size());
    error.message = fmt::format("{}: {}", what, error.message);
    return std::unexpected(error);
  }
  if (auto ok = checkOrchestratorSecret(*secret, fmt::format("{} '{}'", what, path)); !ok) {
    return std::unexpected(ok.error());
  }
  return secret;
}

}  // namespace flyt::transport
