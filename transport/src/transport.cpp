#include "flyt/transport/transport.hpp"

#include "flyt/transport/shm_channel.hpp"
#include "flyt/transport/tcp_channel.hpp"

namespace flyt::transport {

Result<std::unique_ptr<Listener>> listen(const Endpoint& endpoint, const TransportConfig& config) {
  switch (endpoint.kind) {
    case Endpoint::Kind::kTcp: return listenTcp(endpoint, config);
    case Endpoint::Kind::kShm: return listenShm(endpoint, config);
  }
  return fail(Errc::kInvalidArgument, "unknown endpoint kind");
}

Result<std::unique_ptr<Channel>> connect(const Endpoint& endpoint, const TransportConfig& config) {
  switch (endpoint.kind) {
    case Endpoint::Kind::kTcp: return connectTcp(endpoint, config);
    case Endpoint::Kind::kShm: return connectShm(endpoint, config);
  }
  return fail(Errc::kInvalidArgument, "unknown endpoint kind");
}

}  // namespace flyt::transport
