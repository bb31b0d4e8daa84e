#include "flytctl_client.hpp"

#include "flyt/transport/orchestrator_client.hpp"

namespace flyt::flytctl {

transport::Result<std::unique_ptr<Connection>> Connection::open(const std::string& address,
                                                                const std::string& adminToken,
                                                                std::chrono::milliseconds timeout) {
  auto link = transport::OrchestratorConnection::open(address, transport::OrchestratorRole::kAdmin, adminToken, timeout);
  if (!link) {
    auto error = link.error();
    if (error.code == transport::Errc::kUnavailable) error.message = fmt::format("{} {}", error.message, kUnreachableHint);
    return std::unexpected(error);
  }
  return std::unique_ptr<Connection>(new Connection(std::move(*link), timeout));
}

std::unexpected<transport::Error> Connection::failure(const kj::Exception& e) const {
  const std::string description = e.getDescription().cStr();
  // capnp prefixes what the orchestrator threw; anything else happened on the way there.
  if (description.starts_with("remote exception: ")) {
    return transport::fail(transport::Errc::kInvalidArgument, transport::plainRpcMessage(description));
  }
  std::string reason = description;
  if (auto colon = description.rfind(": "); colon != std::string::npos && !description.starts_with("no answer")) {
    reason = description.substr(colon + 2);
  }
  return transport::fail(transport::Errc::kUnavailable,
                         fmt::format("cannot reach the orchestrator at tcp://{}: {} {}", m_link->address(), reason,
                                     kUnreachableHint));
}

}  // namespace flyt::flytctl
