#include "flyt/transport/endpoint.hpp"

#include <fmt/format.h>

#include <charconv>

namespace flyt::transport {
namespace {

constexpr std::string_view kTcpScheme = "tcp://";
constexpr std::string_view kShmScheme = "shm://";
constexpr std::size_t kMaxShmName = 64;

bool validShmName(std::string_view name) {
  if (name.empty() || name.size() > kMaxShmName) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

Result<Endpoint> parseTcp(std::string_view original, std::string_view rest) {
  Endpoint ep;
  ep.kind = Endpoint::Kind::kTcp;
  std::string_view portText;
  if (rest.starts_with('[')) {
    const auto close = rest.find(']');
    if (close == std::string_view::npos || close + 1 >= rest.size() || rest[close + 1] != ':') {
      return fail(Errc::kInvalidArgument,
                  fmt::format("endpoint '{}': IPv6 addresses are written tcp://[addr]:port", original));
    }
    ep.host = std::string(rest.substr(1, close - 1));
    portText = rest.substr(close + 2);
  } else {
    const auto colon = rest.rfind(':');
    if (colon == std::string_view::npos || rest.find(':') != colon) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("endpoint '{}': expected tcp://host:port (IPv6 in brackets)", original));
    }
    ep.host = std::string(rest.substr(0, colon));
    portText = rest.substr(colon + 1);
  }
  if (ep.host.empty()) {
    return fail(Errc::kInvalidArgument, fmt::format("endpoint '{}': missing host", original));
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(portText.data(), portText.data() + portText.size(), port);
  if (portText.empty() || ec != std::errc() || end != portText.data() + portText.size() ||
      port > 65535) {
    return fail(Errc::kInvalidArgument,
                fmt::format("endpoint '{}': port must be a number 0-65535", original));
  }
  ep.port = static_cast<std::uint16_t>(port);
  return ep;
}

}  // namespace

Result<Endpoint> Endpoint::parse(std::string_view text) {
  if (text.starts_with(kTcpScheme)) {
    return parseTcp(text, text.substr(kTcpScheme.size()));
  }
  if (text.starts_with(kShmScheme)) {
    const auto name = text.substr(kShmScheme.size());
    if (!validShmName(name)) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("endpoint '{}': shm names are 1-{} characters of A-Z a-z 0-9 _ - .",
                              text, kMaxShmName));
    }
    Endpoint ep;
    ep.kind = Kind::kShm;
    ep.name = std::string(name);
    return ep;
  }
  return fail(Errc::kInvalidArgument,
              fmt::format("endpoint '{}': expected tcp://host:port or shm://name", text));
}

std::string Endpoint::toString() const {
  if (kind == Kind::kShm) return fmt::format("shm://{}", name);
  if (host.find(':') != std::string::npos) return fmt::format("tcp://[{}]:{}", host, port);
  return fmt::format("tcp://{}:{}", host, port);
}

bool isLoopbackHost(std::string_view host) noexcept {
  return host == "localhost" || host == "::1" || host == "[::1]" || host.starts_with("127.");
}

}  // namespace flyt::transport
