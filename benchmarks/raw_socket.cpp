#include "raw_socket.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "flyt/transport/sys.hpp"

namespace flyt::bench {

using transport::sys;

transport::Result<SocketPair> connectedLoopbackPair() {
  auto listener = sys("socket", [] { return ::socket(AF_INET, SOCK_STREAM, 0); });
  if (!listener) return std::unexpected(listener.error());
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  auto ok = sys("bind", [&] { return ::bind(*listener, reinterpret_cast<sockaddr*>(&addr), len); });
  if (ok) ok = sys("listen", [&] { return ::listen(*listener, 1); });
  if (ok) {
    ok = sys("getsockname",
             [&] { return ::getsockname(*listener, reinterpret_cast<sockaddr*>(&addr), &len); });
  }
  if (!ok) {
    ::close(*listener);
    return std::unexpected(ok.error());
  }
  SocketPair pair;
  auto client = sys("socket", [] { return ::socket(AF_INET, SOCK_STREAM, 0); });
  if (!client) return std::unexpected(client.error());
  pair.client = *client;
  auto connected = sys("connect", [&] {
    return ::connect(pair.client, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  });
  auto accepted = sys("accept", [&] { return ::accept(*listener, nullptr, nullptr); });
  ::close(*listener);
  if (!connected || !accepted) {
    ::close(pair.client);
    return std::unexpected(!connected ? connected.error() : accepted.error());
  }
  pair.server = *accepted;
  const int one = 1;
  for (int fd : {pair.client, pair.server}) {
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return pair;
}

bool writeAll(int fd, const std::byte* data, std::size_t len) {
  while (len > 0) {
    const ssize_t n = ::send(fd, data, len, MSG_NOSIGNAL);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return false;
    }
    data += n;
    len -= std::size_t(n);
  }
  return true;
}

bool readAll(int fd, std::byte* data, std::size_t len) {
  while (len > 0) {
    const ssize_t n = ::recv(fd, data, len, 0);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return false;
    }
    data += n;
    len -= std::size_t(n);
  }
  return true;
}

}  // namespace flyt::bench
