#include "tcp_socket.hpp"

#include "flyt/transport/log.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "flyt/transport/sys.hpp"

namespace flyt::transport::tcp {
namespace {

Result<void> setInt(int fd, int level, int name, int value, const char* what) {
  auto rc = sys(what, [&] { return ::setsockopt(fd, level, name, &value, sizeof value); });
  if (!rc) return std::unexpected(rc.error());
  return {};
}

}  // namespace

spdlog::logger& log() { return flyt::logger("tcp"); }

void Fd::reset() {
  if (m_fd >= 0) ::close(m_fd);
  m_fd = -1;
}

int pollMs(std::chrono::milliseconds ms) {
  return static_cast<int>(std::clamp<std::chrono::milliseconds::rep>(ms.count(), 0, INT_MAX));
}

std::chrono::milliseconds remaining(Clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
  return std::max(left, std::chrono::milliseconds{0});
}

bool isDisconnect(int err) {
  return err == ECONNRESET || err == EPIPE || err == ETIMEDOUT || err == ENOTCONN ||
         err == ECONNABORTED || err == EHOSTUNREACH || err == ENETUNREACH;
}

std::string addressText(const sockaddr_storage& addr, socklen_t len) {
  char host[NI_MAXHOST] = {};
  char port[NI_MAXSERV] = {};
  if (::getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, host, sizeof host, port,
                    sizeof port, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return "?";
  }
  return addr.ss_family == AF_INET6 ? fmt::format("[{}]:{}", host, port)
                                    : fmt::format("{}:{}", host, port);
}

std::string localAddress(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "?";
  return addressText(addr, len);
}

std::string peerAddress(int fd) {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return "?";
  return addressText(addr, len);
}

// Options of a connected socket: no Nagle delay, blocking I/O whose every call gives up after
// peerTimeout without progress, and keepalive + TCP_USER_TIMEOUT so that a vanished host (no FIN,
// no RST) is noticed within about peerTimeout.
Result<void> configureConnected(int fd, const TransportConfig& config) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) {
    return fail(Errc::kSystem, fmt::format("fcntl: {}", std::strerror(errno)), errno);
  }
  const auto peerMs = std::max<std::int64_t>(config.peerTimeout.count(), 1);
  const int peerSec = static_cast<int>(std::max<std::int64_t>((peerMs + 999) / 1000, 1));
  const int idle = std::max(peerSec / 2, 1);
  const int interval = std::max((peerSec - idle) / 3, 1);
  timeval tv{};
  tv.tv_sec = peerMs / 1000;
  tv.tv_usec = static_cast<suseconds_t>((peerMs % 1000) * 1000);
  for (int opt : {SO_RCVTIMEO, SO_SNDTIMEO}) {
    auto rc = sys("setsockopt(SO_RCVTIMEO/SO_SNDTIMEO)",
                  [&] { return ::setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof tv); });
    if (!rc) return std::unexpected(rc.error());
  }
  Result<void> rc;
  if (!(rc = setInt(fd, IPPROTO_TCP, TCP_NODELAY, 1, "setsockopt(TCP_NODELAY)"))) return rc;
  if (!(rc = setInt(fd, SOL_SOCKET, SO_KEEPALIVE, 1, "setsockopt(SO_KEEPALIVE)"))) return rc;
  if (!(rc = setInt(fd, IPPROTO_TCP, TCP_KEEPIDLE, idle, "setsockopt(TCP_KEEPIDLE)"))) return rc;
  if (!(rc = setInt(fd, IPPROTO_TCP, TCP_KEEPINTVL, interval, "setsockopt(TCP_KEEPINTVL)"))) return rc;
  if (!(rc = setInt(fd, IPPROTO_TCP, TCP_KEEPCNT, 3, "setsockopt(TCP_KEEPCNT)"))) return rc;
  return setInt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, static_cast<int>(std::min<std::int64_t>(peerMs, INT_MAX)),
                "setsockopt(TCP_USER_TIMEOUT)");
}

Result<AddrInfoList> resolve(const Endpoint& ep, bool passive) {
  if (ep.kind != Endpoint::Kind::kTcp) {
    return fail(Errc::kInvalidArgument, fmt::format("'{}' is not a tcp:// endpoint", ep.toString()));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* list = nullptr;
  const auto port = std::to_string(ep.port);
  const int rc = ::getaddrinfo(ep.host.c_str(), port.c_str(), &hints, &list);
  if (rc != 0) {
    return fail(rc == EAI_AGAIN ? Errc::kUnavailable : Errc::kInvalidArgument,
                fmt::format("cannot resolve '{}': {}", ep.host, ::gai_strerror(rc)));
  }
  return AddrInfoList(list);
}

// Default payload buffers. A buffer goes back to the pool when the Incoming holding it dies, so a
// receive loop that drops each Incoming before the next receive() reuses one allocation.
Result<Fd> connectOne(const addrinfo& ai, Clock::time_point deadline) {
  auto fd = sys("socket", [&] {
    return ::socket(ai.ai_family, ai.ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai.ai_protocol);
  });
  if (!fd) return std::unexpected(fd.error());
  Fd sock(*fd);
  auto rc = sys("connect", [&] { return ::connect(sock.get(), ai.ai_addr, ai.ai_addrlen); });
  if (rc) return sock;
  if (rc.error().sysErrno != EINPROGRESS && rc.error().sysErrno != EALREADY) return std::unexpected(rc.error());
  pollfd pfd{sock.get(), POLLOUT, 0};
  auto ready = sys("poll", [&] { return ::poll(&pfd, 1, pollMs(remaining(deadline))); });
  if (!ready) return std::unexpected(ready.error());
  if (*ready == 0) return fail(Errc::kTimeout, "no answer", ETIMEDOUT);
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(sock.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) return fail(Errc::kSystem, std::strerror(err), err);
  return sock;
}

}  // namespace flyt::transport::tcp
