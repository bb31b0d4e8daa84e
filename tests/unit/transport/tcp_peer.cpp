// A peer process for tcp_channel_test: the test kills it with SIGKILL to prove that a dead peer is
// reported as kDisconnected. Writes nothing on stdout.
//
//   tcp_peer stream <endpoint>  connect, send one frame whose header announces a 1 GiB payload, then
//                               trickle the payload (1 MiB every 5 ms) until killed
//   tcp_peer hold <endpoint>    connect with TcpChannel and never read, until killed
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "flyt/transport/endpoint.hpp"
#include "flyt/transport/tcp_channel.hpp"
#include "flyt/wire/session.capnp.h"

namespace {

// The documented frame header (transport/src/tcp_channel.cpp), written independently on purpose.
struct Header {
  std::uint32_t magic = 0x54594c46;
  std::uint16_t version = 1;
  std::uint16_t flags = 0;
  std::uint64_t messageBytes = 0;
  std::uint64_t payloadBytes = 0;
};
static_assert(sizeof(Header) == 24);

bool writeAll(int fd, const void* data, std::size_t size) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::send(fd, p, size, MSG_NOSIGNAL);
    if (n <= 0) return false;
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// The TcpChannel API cannot send half a frame, so this mode writes the frame on a raw socket.
int stream(const flyt::transport::Endpoint& ep) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* ai = nullptr;
  if (::getaddrinfo(ep.host.c_str(), std::to_string(ep.port).c_str(), &hints, &ai) != 0) return 1;
  const int fd = ::socket(ai->ai_family, SOCK_STREAM, 0);
  if (fd < 0 || ::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) return 1;
  ::freeaddrinfo(ai);

  capnp::MallocMessageBuilder builder;
  builder.initRoot<flyt::wire::Envelope>().initGoodbye().setReason("stream");
  auto words = capnp::messageToFlatArray(builder);
  Header header;
  header.messageBytes = words.size() * sizeof(capnp::word);
  header.payloadBytes = 1ULL << 30;
  if (!writeAll(fd, &header, sizeof header) || !writeAll(fd, words.begin(), header.messageBytes)) {
    return 1;
  }
  const std::vector<char> chunk(1 << 20, 'x');
  for (std::uint64_t sent = 0; sent + chunk.size() < header.payloadBytes; sent += chunk.size()) {
    if (!writeAll(fd, chunk.data(), chunk.size())) return 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  // Never completes the frame on purpose: the test kills this process long before.
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: tcp_peer stream|hold <endpoint>\n");
    return 2;
  }
  const std::string_view mode = argv[1];
  auto ep = flyt::transport::Endpoint::parse(argv[2]);
  if (!ep) {
    std::fprintf(stderr, "tcp_peer: %s\n", ep.error().describe().c_str());
    return 2;
  }
  if (mode == "stream") return stream(*ep);
  if (mode == "hold") {
    flyt::transport::TransportConfig config;
    config.peerTimeout = std::chrono::seconds(30);
    auto channel = flyt::transport::connectTcp(*ep, config);
    if (!channel) {
      std::fprintf(stderr, "tcp_peer: %s\n", channel.error().describe().c_str());
      return 1;
    }
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  return 2;
}
