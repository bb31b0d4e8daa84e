#include "flytctl_client.hpp"

#include "flyt/transport/orchestrator_client.hpp"

namespace flyt::flytctl {

Connection::Connection(std::string address, std::chrono::milliseconds timeout)
    : m_address(std::move(address)),
      m_timeout(timeout),
      m_client(m_address.c_str(), transport::kOrchestratorPort),
      m_main(m_client.getMain<wire::Orchestrator>()) {}

kj::Exception Connection::timeoutException() const {
  return kj::Exception(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__,
                       kj::str("no answer within ", m_timeout.count(), " ms"));
}

std::unexpected<transport::Error> Connection::failure(const kj::Exception& e) const {
  const std::string description = e.getDescription().cStr();
  // capnp prefixes what the orchestrator threw; anything else happened on the way there.
  if (description.starts_with("remote exception: ")) {
    return transport::fail(transport::Errc::kInvalidArgument, transport::plainRpcMessage(description));
  }
  std::string reason = description;
  if (description.find("Connection refused") != std::string::npos) {
    reason = "connection refused";
  } else if (auto colon = description.rfind(": "); colon != std::string::npos && !description.starts_with("no answer")) {
    reason = description.substr(colon + 2);
  }
  return transport::fail(transport::Errc::kUnavailable,
                         fmt::format("cannot reach the orchestrator at tcp://{}: {} (is flyt-orchestrator running? "
                                     "--orchestrator / FLYT_ORCHESTRATOR)",
                                     m_address, reason));
}

}  // namespace flyt::flytctl
