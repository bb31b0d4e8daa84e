#include "flyt/transport/orchestrator_connection.hpp"

#include <capnp/rpc-twoparty.h>
#include <fmt/format.h>

#include <optional>

#include "flyt/transport/orchestrator_client.hpp"

namespace flyt::transport {
namespace {

using Clock = std::chrono::steady_clock;

// "connection refused" from kj's "connect(): Connection refused", else the last clause.
std::string reasonOf(const kj::Exception& e) {
  const std::string description = plainRpcMessage(e.getDescription().cStr());
  if (description.find("Connection refused") != std::string::npos) return "connection refused";
  const auto colon = description.rfind(": ");
  return colon == std::string::npos ? description : description.substr(colon + 2);
}

}  // namespace

struct OrchestratorConnection::Impl {
  std::optional<kj::AsyncIoContext> ownLoop;  // when the caller has none
  kj::AsyncIoContext* loop = nullptr;
  std::string address;
  kj::Own<kj::AsyncIoStream> stream;
  kj::Own<capnp::TwoPartyClient> rpc;
  wire::Orchestrator::Client main = nullptr;
};

Result<std::unique_ptr<OrchestratorConnection>> OrchestratorConnection::open(const std::string& address,
                                                                             OrchestratorRole role,
                                                                             const std::string& secret,
                                                                             std::chrono::milliseconds timeout) {
  auto impl = std::make_unique<Impl>();
  kj::Maybe<kj::Exception> thrown = kj::runCatchingExceptions([&] { impl->ownLoop.emplace(kj::setupAsyncIo()); });
  KJ_IF_MAYBE (e, thrown) {
    return fail(Errc::kInvalidArgument, fmt::format("no event loop for the orchestrator's connection: {}",
                                                    e->getDescription().cStr()));
  }
  impl->loop = &*impl->ownLoop;
  return connect(std::move(impl), address, role, secret, timeout);
}

Result<std::unique_ptr<OrchestratorConnection>> OrchestratorConnection::open(kj::AsyncIoContext& io,
                                                                             const std::string& address,
                                                                             OrchestratorRole role,
                                                                             const std::string& secret,
                                                                             std::chrono::milliseconds timeout) {
  auto impl = std::make_unique<Impl>();
  impl->loop = &io;
  return connect(std::move(impl), address, role, secret, timeout);
}

Result<std::unique_ptr<OrchestratorConnection>> OrchestratorConnection::connect(std::unique_ptr<Impl> impl,
                                                                                const std::string& address,
                                                                                OrchestratorRole role,
                                                                                const std::string& secret,
                                                                                std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  impl->address = address;
  auto& io = *impl->loop;
  auto& timer = io.provider->getTimer();
  kj::Maybe<kj::Exception> thrown = kj::runCatchingExceptions([&] {
    auto connecting = io.provider->getNetwork()
                          .parseAddress(address, kOrchestratorPort)
                          .then([](kj::Own<kj::NetworkAddress> where) { return where->connect(); });
    auto late = timer.afterDelay(timeout.count() * kj::MILLISECONDS).then([timeout]() -> kj::Own<kj::AsyncIoStream> {
      kj::throwFatalException(kj::Exception(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__,
                                            kj::str("no answer within ", timeout.count(), " ms")));
    });
    impl->stream = connecting.exclusiveJoin(kj::mv(late)).wait(io.waitScope);
  });
  KJ_IF_MAYBE (e, thrown) {
    return fail(Errc::kUnavailable, fmt::format("cannot reach the orchestrator at tcp://{}: {}", address, reasonOf(*e)));
  }
  const auto left = std::max(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()),
                             std::chrono::milliseconds(1));
  auto authenticated = offerPreamble(*impl->stream, timer, role, secret, left).wait(io.waitScope);
  if (!authenticated) {
    auto error = authenticated.error();
    const bool refused = error.message.starts_with("refused");
    error.message = fmt::format("the orchestrator at tcp://{}{}{}", address, refused ? " " : ": ", error.message);
    return std::unexpected(error);
  }
  impl->rpc = kj::heap<capnp::TwoPartyClient>(*impl->stream);
  impl->main = impl->rpc->bootstrap().castAs<wire::Orchestrator>();
  return std::unique_ptr<OrchestratorConnection>(new OrchestratorConnection(std::move(impl)));
}

OrchestratorConnection::OrchestratorConnection(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}

OrchestratorConnection::~OrchestratorConnection() = default;

wire::Orchestrator::Client& OrchestratorConnection::orchestrator() { return m_impl->main; }

kj::WaitScope& OrchestratorConnection::waitScope() { return m_impl->loop->waitScope; }

kj::Timer& OrchestratorConnection::timer() { return m_impl->loop->provider->getTimer(); }

const std::string& OrchestratorConnection::address() const { return m_impl->address; }

}  // namespace flyt::transport
