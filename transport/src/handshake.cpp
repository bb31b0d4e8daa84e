#include "flyt/transport/handshake.hpp"

#include <fmt/format.h>
#include <kj/exception.h>
#include <unistd.h>

#include <array>
#include <optional>
#include <algorithm>
#include <random>
#include <thread>

#include "auth_crypto.hpp"
#include "flyt/transport/transport.hpp"
#include "flyt/wire/session.capnp.h"

namespace flyt::transport {
namespace {

Result<void> sendWelcome(Channel& channel, std::uint64_t sessionId, wire::TransportStatus status,
                         std::string_view message, std::string_view redirect = {}) {
  return channel.send([&](capnp::MessageBuilder& builder) {
    auto welcome = builder.initRoot<wire::Envelope>().initWelcome();
    welcome.setProtocolVersion(wire::PROTOCOL_VERSION);
    welcome.setSessionId(sessionId);
    welcome.setStatus(status);
    welcome.setMessage(kj::StringPtr(std::string(message).c_str()));
    if (!redirect.empty()) welcome.setRedirect(kj::StringPtr(std::string(redirect).c_str()));
  });
}


// Authentication (see handshake.hpp and schema/session.capnp): nonces and proofs are 32 bytes.
using auth::kNonceBytes;
using auth::randomNonce;
using auth::sameProof;
constexpr std::string_view kClientLabel = "flyt-tcp-v1 client";
constexpr std::string_view kServerLabel = "flyt-tcp-v1 server";
// What a refused client is told; the details (missing or wrong) stay in the server's log.
constexpr std::string_view kRefusal = "authentication failed: wrong or missing token (auth_token)";
constexpr std::string_view kSetting = "auth_token ([transport] auth_token / auth_token_file, or FLYT_AUTH_TOKEN)";

using Bytes = std::vector<std::byte>;

// shm is same-host: the files' permissions guard it (see handshake.hpp).
bool authenticates(const Channel& channel, std::string_view secret) {
  return !secret.empty() && !channel.sharesHostMemory();
}

// HMAC-SHA256(secret, nonce || sessionId (little endian) || label).
Bytes authProof(std::string_view secret, std::span<const std::byte> nonce, std::uint64_t sessionId,
                std::string_view label) {
  std::array<std::byte, 8> id{};
  for (int i = 0; i < 8; ++i) id[i] = std::byte(sessionId >> (8 * i));
  return auth::hmacSha256(secret, {nonce, id, auth::bytesOf(label)});
}

kj::ArrayPtr<const capnp::byte> wireBytes(std::span<const std::byte> bytes) {
  return kj::arrayPtr(reinterpret_cast<const capnp::byte*>(bytes.data()), bytes.size());
}

Bytes toBytes(capnp::Data::Reader data) {
  return Bytes(reinterpret_cast<const std::byte*>(data.begin()), reinterpret_cast<const std::byte*>(data.end()));
}

struct Challenge {
  Bytes nonce;
  Bytes serverProof;
};

// The AuthChallenge in `incoming`, or nullopt when it holds something else.
std::optional<Challenge> readChallenge(Incoming& incoming) {
  std::optional<Challenge> challenge;
  (void)kj::runCatchingExceptions([&] {
    auto envelope = incoming.root<wire::Envelope>();
    if (!envelope.isAuthChallenge()) return;
    auto body = envelope.getAuthChallenge();
    challenge = Challenge{toBytes(body.getNonce()), toBytes(body.getServerProof())};
  });
  return challenge;
}

Result<void> sendGoodbye(Channel& channel, std::string_view reason) {
  return channel.send([&](capnp::MessageBuilder& builder) {
    builder.initRoot<wire::Envelope>().initGoodbye().setReason(kj::StringPtr(std::string(reason).c_str()));
  });
}

// Server: challenges the client of `hello` and checks its answer. The error says what was wrong
// (for the server's log); the client is told only kRefusal.
Result<void> challengeClient(Channel& channel, const HelloInfo& hello, std::string_view secret,
                             std::chrono::milliseconds timeout) {
  const Bytes nonce = randomNonce();
  auto sent = channel.send([&](capnp::MessageBuilder& builder) {
    auto challenge = builder.initRoot<wire::Envelope>().initAuthChallenge();
    challenge.setNonce(wireBytes(nonce));
    if (hello.authNonce.size() == kNonceBytes) {
      challenge.setServerProof(wireBytes(authProof(secret, hello.authNonce, hello.sessionId, kServerLabel)));
    }
  });
  if (!sent) return std::unexpected(sent.error());
  auto incoming = channel.receive(timeout);
  if (!incoming) {
    return fail(incoming.error().code, fmt::format("no answer to the authentication challenge: {}",
                                                   incoming.error().message));
  }
  std::optional<Bytes> proof;
  std::string goodbye;
  (void)kj::runCatchingExceptions([&] {
    auto envelope = incoming->root<wire::Envelope>();
    if (envelope.isAuthResponse()) proof = toBytes(envelope.getAuthResponse().getProof());
    if (envelope.isGoodbye()) goodbye = envelope.getGoodbye().getReason().cStr();
  });
  if (!goodbye.empty()) return fail(Errc::kUnauthenticated, fmt::format("the client left: {}", goodbye));
  if (!proof) return fail(Errc::kUnauthenticated, "the client answered the challenge with something else");
  if (proof->empty()) return fail(Errc::kUnauthenticated, "missing token: the client has no auth_token");
  if (!sameProof(*proof, authProof(secret, nonce, hello.sessionId, kClientLabel))) {
    return fail(Errc::kUnauthenticated, "wrong token: the client's proof does not match this auth_token");
  }
  return {};
}

}  // namespace

namespace {

// The Welcome in `incoming`: its redirect when it admits `sessionId`, else why the server refused.
Result<WelcomeInfo> readWelcome(Incoming& incoming, std::uint64_t sessionId) {
  Error refused{Errc::kMalformed, ""};
  WelcomeInfo info;
  kj::Maybe<kj::Exception> problem = kj::runCatchingExceptions([&] {
    auto envelope = incoming.root<wire::Envelope>();
    if (!envelope.isWelcome()) {
      refused.message = "server answered the handshake with something other than Welcome";
      return;
    }
    auto welcome = envelope.getWelcome();
    switch (welcome.getStatus()) {
      case wire::TransportStatus::OK:
        if (welcome.getSessionId() != sessionId) {
          refused.message = "server welcomed a different session id";
          return;
        }
        refused.message.clear();
        info.redirect = welcome.getRedirect().cStr();
        return;
      case wire::TransportStatus::UNSUPPORTED: refused.code = Errc::kUnsupported; break;
      case wire::TransportStatus::DISCONNECTED: refused.code = Errc::kDisconnected; break;
      case wire::TransportStatus::TIMEOUT: refused.code = Errc::kTimeout; break;
      case wire::TransportStatus::BUSY: refused.code = Errc::kBusy; break;
      default: refused.code = Errc::kMalformed; break;
    }
    refused.message = fmt::format("server refused the session: {}", welcome.getMessage().cStr());
  });
  KJ_IF_MAYBE (e, problem) {
    return fail(Errc::kMalformed, fmt::format("undecodable handshake reply: {}", e->getDescription().cStr()));
  }
  if (!refused.message.empty()) return std::unexpected(refused);
  return info;
}

Result<Incoming> receiveReply(Channel& channel, std::chrono::milliseconds timeout) {
  auto incoming = channel.receive(timeout);
  if (!incoming) {
    auto error = incoming.error();
    error.message = fmt::format("handshake with {}: {}", channel.describe(), error.message);
    return std::unexpected(error);
  }
  return incoming;
}

// Client: answers `challenge` (an empty proof when it has no secret, so that the server logs why it
// refuses) and reads the Welcome. A refusal here is an authentication failure.
Result<WelcomeInfo> answerChallenge(Channel& channel, const Challenge& challenge, std::uint64_t sessionId,
                                    std::string_view secret, std::chrono::milliseconds timeout) {
  auto sent = channel.send([&](capnp::MessageBuilder& builder) {
    auto response = builder.initRoot<wire::Envelope>().initAuthResponse();
    if (!secret.empty()) response.setProof(wireBytes(authProof(secret, challenge.nonce, sessionId, kClientLabel)));
  });
  if (!sent) return std::unexpected(sent.error());
  auto incoming = receiveReply(channel, timeout);
  if (!incoming) return std::unexpected(incoming.error());
  auto welcome = readWelcome(*incoming, sessionId);
  if (welcome) return welcome;
  if (secret.empty()) {
    return fail(Errc::kUnauthenticated,
                fmt::format("{} requires authentication and this client has no token: set {} to the node's",
                            channel.describe(), kSetting));
  }
  return fail(Errc::kUnauthenticated,
              fmt::format("{} refused authentication ({}): this client's {} must equal the node's",
                          channel.describe(), welcome.error().message, kSetting));
}

}  // namespace

Result<WelcomeInfo> clientHandshake(Channel& channel, std::uint64_t sessionId, std::string_view clientName,
                             std::chrono::milliseconds timeout, std::span<const std::byte> token,
                             std::uint32_t protocolVersion, std::string_view authToken, SessionApi api) {
  const std::uint32_t version = protocolVersion != 0 ? protocolVersion : wire::PROTOCOL_VERSION;
  const std::string name(clientName);
  const bool mutual = authenticates(channel, authToken);
  const Bytes nonce = mutual ? randomNonce() : Bytes{};
  auto sent = channel.send([&](capnp::MessageBuilder& builder) {
    auto hello = builder.initRoot<wire::Envelope>().initHello();
    hello.setProtocolVersion(version);
    hello.setSessionId(sessionId);
    hello.setClientName(name.c_str());
    hello.setPid(static_cast<std::uint32_t>(::getpid()));
    hello.setToken(wireBytes(token));
    if (mutual) hello.setAuthNonce(wireBytes(nonce));
    hello.setApi(api == SessionApi::kDriver ? wire::SessionApi::DRIVER : wire::SessionApi::RUNTIME);
  });
  if (!sent) return std::unexpected(sent.error());

  auto incoming = receiveReply(channel, timeout);
  if (!incoming) return std::unexpected(incoming.error());
  const auto challenge = readChallenge(*incoming);
  if (!challenge) {
    auto welcome = readWelcome(*incoming, sessionId);
    if (!welcome || !mutual) return welcome;
    (void)sendGoodbye(channel, "the node did not authenticate itself");
    return fail(Errc::kUnauthenticated,
                fmt::format("{} did not authenticate itself although this client has an auth_token: the node "
                            "has none configured, or it is not the node you meant; set the same {} on both",
                            channel.describe(), kSetting));
  }
  auto welcome = answerChallenge(channel, *challenge, sessionId, authToken, timeout);
  if (!welcome || !mutual) return welcome;
  if (!sameProof(challenge->serverProof, authProof(authToken, nonce, sessionId, kServerLabel))) {
    (void)sendGoodbye(channel, "the node's proof of auth_token is wrong");
    return fail(Errc::kUnauthenticated,
                fmt::format("{} failed to prove it holds this client's auth_token: it is not the node you "
                            "meant; nothing was sent to it",
                            channel.describe()));
  }
  return welcome;
}

Result<HelloInfo> serverHandshake(Channel& channel, std::chrono::milliseconds timeout,
                                  const AdmitSession& admit, std::string_view authToken) {
  auto incoming = channel.receive(timeout);
  if (!incoming) return std::unexpected(incoming.error());
  HelloInfo info;
  bool isHello = false;
  kj::Maybe<kj::Exception> problem = kj::runCatchingExceptions([&] {
    auto envelope = incoming->root<wire::Envelope>();
    if (!envelope.isHello()) return;
    auto hello = envelope.getHello();
    isHello = true;
    info.protocolVersion = hello.getProtocolVersion();
    info.sessionId = hello.getSessionId();
    info.clientName = hello.getClientName().cStr();
    info.pid = hello.getPid();
    info.token = toBytes(hello.getToken());
    info.authNonce = toBytes(hello.getAuthNonce());
    info.api = hello.getApi() == wire::SessionApi::DRIVER ? SessionApi::kDriver : SessionApi::kRuntime;
  });
  if (problem != nullptr || !isHello) {
    (void)sendWelcome(channel, 0, wire::TransportStatus::MALFORMED, "expected Hello");
    return fail(Errc::kMalformed, "the first message of a session was not a valid Hello");
  }
  if (info.protocolVersion != wire::PROTOCOL_VERSION) {
    const auto why = fmt::format("protocol version {} is not supported (server speaks {})",
                                 info.protocolVersion, wire::PROTOCOL_VERSION);
    (void)sendWelcome(channel, info.sessionId, wire::TransportStatus::UNSUPPORTED, why);
    return fail(Errc::kUnsupported, why);
  }
  if (authenticates(channel, authToken)) {
    auto authenticated = challengeClient(channel, info, authToken, timeout);
    if (!authenticated) {
      (void)sendWelcome(channel, info.sessionId, wire::TransportStatus::UNSUPPORTED, kRefusal);
      return fail(Errc::kUnauthenticated,
                  fmt::format("authentication of session {:016x} from {} failed: {}", info.sessionId,
                              channel.describe(), authenticated.error().message));
    }
  }
  std::string redirect;
  if (admit) {
    auto admitted = admit(info);
    if (!admitted) {
      const auto status = admitted.error().code == Errc::kBusy ? wire::TransportStatus::BUSY
                                                                : wire::TransportStatus::UNSUPPORTED;
      (void)sendWelcome(channel, info.sessionId, status, admitted.error().message);
      return std::unexpected(admitted.error());
    }
    redirect = std::move(*admitted);
  }
  auto sent = sendWelcome(channel, info.sessionId, wire::TransportStatus::OK, "", redirect);
  if (!sent) return std::unexpected(sent.error());
  return info;
}

Result<OpenedSession> openSession(std::string_view endpoint, const TransportConfig& config,
                                  std::string_view clientName, std::span<const std::byte> token,
                                  std::uint64_t sessionId, SessionApi api) {
  OpenedSession session;
  session.sessionId = sessionId != 0 ? sessionId : newSessionId();
  session.endpoint = std::string(endpoint);
  // A node at capacity (kBusy: its shared-memory sessions, say) is asked again until connectTimeout
  // has passed since the first try: sessions that just ended free their places within moments.
  const auto busyUntil = std::chrono::steady_clock::now() + config.connectTimeout;
  auto busyPause = std::chrono::milliseconds(20);
  for (int hop = 0; hop < 2; ++hop) {
    auto where = Endpoint::parse(session.endpoint);
    if (!where) return std::unexpected(where.error());
    auto channel = connect(*where, config);
    if (!channel) return std::unexpected(channel.error());
    // The second hop reaches the worker, which answers once its GPU context exists.
    const auto bound = hop == 0 ? config.connectTimeout : std::max(config.connectTimeout, config.sessionStartTimeout);
    auto welcome = clientHandshake(**channel, session.sessionId, clientName, bound, token, 0, config.authToken, api);
    if (!welcome && welcome.error().code == Errc::kBusy && hop == 0 &&
        std::chrono::steady_clock::now() + busyPause < busyUntil) {
      std::this_thread::sleep_for(busyPause);
      busyPause = std::min(busyPause * 2, std::chrono::milliseconds(500));
      --hop;  // the same first hop again, on a new connection
      continue;
    }
    if (!welcome) return std::unexpected(welcome.error());
    if (welcome->redirect.empty()) {
      session.channel = std::move(*channel);
      return session;
    }
    session.endpoint = welcome->redirect;
  }
  return fail(Errc::kMalformed, fmt::format("{} redirected the session more than once", endpoint));
}

std::uint64_t newSessionId() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uint64_t id = 0;
  while (id == 0) id = rng();
  return id;
}

}  // namespace flyt::transport
