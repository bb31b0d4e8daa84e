// Plain TCP sockets on loopback: the baseline the TCP channel is measured against.
#pragma once

#include <cstddef>

#include "flyt/transport/error.hpp"

namespace flyt::bench {

// A connected pair of TCP sockets on 127.0.0.1 with TCP_NODELAY (fds; the caller closes them).
struct SocketPair {
  int client = -1;
  int server = -1;
};
[[nodiscard]] transport::Result<SocketPair> connectedLoopbackPair();

// Writes / reads exactly `len` bytes; false on EOF or error.
bool writeAll(int fd, const std::byte* data, std::size_t len);
bool readAll(int fd, std::byte* data, std::size_t len);

}  // namespace flyt::bench
