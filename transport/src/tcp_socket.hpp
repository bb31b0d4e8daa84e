// Socket plumbing for TcpChannel (private to transport/): descriptors, address resolution,
// non-blocking connect, socket options. Everything fallible returns Result and keeps errno.
#pragma once

#include <netdb.h>
#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>

#include <spdlog/logger.h>

#include "flyt/transport/config.hpp"
#include "flyt/transport/endpoint.hpp"
#include "flyt/transport/error.hpp"

namespace flyt::transport::tcp {

using Clock = std::chrono::steady_clock;

// The transport component's logger (stderr; never stdout).
spdlog::logger& log();

// Owns one file descriptor; closes it on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : m_fd(fd) {}
  Fd(Fd&& other) noexcept : m_fd(std::exchange(other.m_fd, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      m_fd = std::exchange(other.m_fd, -1);
    }
    return *this;
  }
  ~Fd() { reset(); }
  void reset();
  [[nodiscard]] int get() const { return m_fd; }

 private:
  int m_fd = -1;
};

// poll()'s timeout argument for `ms`, clamped to [0, INT_MAX].
[[nodiscard]] int pollMs(std::chrono::milliseconds ms);
// Time left until `deadline`, never negative, rounded up to whole milliseconds.
[[nodiscard]] std::chrono::milliseconds remaining(Clock::time_point deadline);
// True for the errno values that mean the peer or the path to it is gone.
[[nodiscard]] bool isDisconnect(int err);

// "127.0.0.1:7070" / "[::1]:7070" (numeric); "?" when unknown.
[[nodiscard]] std::string addressText(const sockaddr_storage& addr, socklen_t len);
[[nodiscard]] std::string localAddress(int fd);
[[nodiscard]] std::string peerAddress(int fd);

// Makes a connected socket blocking with SO_RCVTIMEO/SO_SNDTIMEO = peerTimeout (each call gives up
// after that long without progress), TCP_NODELAY, keepalive and TCP_USER_TIMEOUT sized so that a
// vanished host is noticed within about peerTimeout.
[[nodiscard]] Result<void> configureConnected(int fd, const TransportConfig& config);

struct AddrInfoFree {
  void operator()(addrinfo* ai) const { ::freeaddrinfo(ai); }
};
using AddrInfoList = std::unique_ptr<addrinfo, AddrInfoFree>;

// getaddrinfo for a tcp:// endpoint (AI_PASSIVE when `passive`). kInvalidArgument for a non-tcp
// endpoint or an unknown host, kUnavailable when resolution failed temporarily.
[[nodiscard]] Result<AddrInfoList> resolve(const Endpoint& ep, bool passive);

// One non-blocking connect attempt to `ai`, bounded by `deadline`. kTimeout when the deadline
// passed; otherwise the errno of the failure is in Error::sysErrno.
[[nodiscard]] Result<Fd> connectOne(const addrinfo& ai, Clock::time_point deadline);

}  // namespace flyt::transport::tcp
