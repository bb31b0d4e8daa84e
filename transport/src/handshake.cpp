#include "flyt/transport/handshake.hpp"

#include <fmt/format.h>
#include <kj/exception.h>
#include <unistd.h>

#include <random>

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

}  // namespace

Result<WelcomeInfo> clientHandshake(Channel& channel, std::uint64_t sessionId, std::string_view clientName,
                             std::chrono::milliseconds timeout, std::span<const std::byte> token,
                             std::uint32_t protocolVersion) {
  const std::uint32_t version = protocolVersion != 0 ? protocolVersion : wire::PROTOCOL_VERSION;
  const std::string name(clientName);
  auto sent = channel.send([&](capnp::MessageBuilder& builder) {
    auto hello = builder.initRoot<wire::Envelope>().initHello();
    hello.setProtocolVersion(version);
    hello.setSessionId(sessionId);
    hello.setClientName(name.c_str());
    hello.setPid(static_cast<std::uint32_t>(::getpid()));
    hello.setToken(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(token.data()), token.size()));
  });
  if (!sent) return std::unexpected(sent.error());

  auto incoming = channel.receive(timeout);
  if (!incoming) {
    auto error = incoming.error();
    error.message = fmt::format("handshake with {}: {}", channel.describe(), error.message);
    return std::unexpected(error);
  }
  Error refused{Errc::kMalformed, ""};
  WelcomeInfo info;
  kj::Maybe<kj::Exception> problem = kj::runCatchingExceptions([&] {
    auto envelope = incoming->root<wire::Envelope>();
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

Result<HelloInfo> serverHandshake(Channel& channel, std::chrono::milliseconds timeout,
                                  const AdmitSession& admit) {
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
    auto token = hello.getToken();
    info.token.assign(reinterpret_cast<const std::byte*>(token.begin()),
                      reinterpret_cast<const std::byte*>(token.end()));
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
  std::string redirect;
  if (admit) {
    auto admitted = admit(info);
    if (!admitted) {
      (void)sendWelcome(channel, info.sessionId, wire::TransportStatus::UNSUPPORTED,
                        admitted.error().message);
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
                                  std::uint64_t sessionId) {
  OpenedSession session;
  session.sessionId = sessionId != 0 ? sessionId : newSessionId();
  session.endpoint = std::string(endpoint);
  for (int hop = 0; hop < 2; ++hop) {
    auto where = Endpoint::parse(session.endpoint);
    if (!where) return std::unexpected(where.error());
    auto channel = connect(*where, config);
    if (!channel) return std::unexpected(channel.error());
    auto welcome =
        clientHandshake(**channel, session.sessionId, clientName, config.connectTimeout, token);
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
