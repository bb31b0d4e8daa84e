// A session spoken by hand, for the hostile-client tests (hostile_client_test.cpp: the runtime cut,
// hostile_driver_test.cpp: the driver cut). The test process is the client: it opens a session with
// transport::openSession and sends Envelopes it builds itself (any method id, any argument bytes,
// any bulk references), so it can send what Flyt's client libraries never would. One call per
// batch, each waiting for its reply. Not thread-safe; one test thread owns a RawSession.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <ostream>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "flyt/api/codec.hpp"
#include "flyt/transport/channel.hpp"
#include "flyt/transport/config.hpp"
#include "flyt/transport/handshake.hpp"
#include "flyt/wire/session.capnp.h"

namespace flyt::test {

// One BulkRef of a call: `length` bytes at `offset` of the inline payload or of a data-region segment.
struct BulkSpec {
  std::uint32_t segment = wire::INLINE_SEGMENT;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

// What the worker answered to a call (the reply's last result), or status DISCONNECTED and the
// reason in `detail` when the channel failed.
struct Answer {
  std::int32_t error = -1;
  wire::TransportStatus status = wire::TransportStatus::DISCONNECTED;
  std::string detail;
  std::vector<std::byte> results;
  std::vector<std::byte> payload;

  // The T at `offset` of the results; T{} when they are shorter.
  template <class T> T result(std::size_t offset = 0) const {
    T value{};
    if (results.size() >= offset + sizeof(T)) std::memcpy(&value, results.data() + offset, sizeof(T));
    return value;
  }
};
std::ostream& operator<<(std::ostream& os, const Answer& a);

// Argument bytes as api::ArgWriter lays them out.
template <class... T> std::vector<std::byte> pack(const T&... values) {
  std::vector<std::byte> out;
  api::ArgWriter writer(out);
  (writer.put(values), ...);
  return out;
}
// `a` followed by `b` (a parameter block, a name after packed arguments).
std::vector<std::byte> concat(std::vector<std::byte> a, std::span<const std::byte> b);

class RawSession {
 public:
  // Opens the session (a test failure when it cannot); `api` picks the method table of its calls.
  RawSession(const std::string& endpoint, const transport::TransportConfig& config, const char* name,
             transport::SessionApi api = transport::SessionApi::kRuntime);

  [[nodiscard]] bool open() const { return m_session.channel != nullptr; }
  [[nodiscard]] transport::Channel& channel() { return *m_session.channel; }
  // The session id as the node's log writes it.
  [[nodiscard]] std::string hex() const;
  [[nodiscard]] std::uint64_t id() const { return m_session.sessionId; }

  // Sends one call in a batch of its own and waits up to 5 s for the reply.
  Answer call(std::uint32_t method, const std::vector<std::byte>& args, std::vector<BulkSpec> bulk = {},
              std::span<const std::byte> payload = {});
  template <class Method>
    requires std::is_enum_v<Method>
  Answer call(Method method, const std::vector<std::byte>& args, std::vector<BulkSpec> bulk = {},
              std::span<const std::byte> payload = {}) {
    return call(static_cast<std::uint32_t>(method), args, std::move(bulk), payload);
  }

 private:
  transport::OpenedSession m_session;
  std::uint64_t m_sequence = 0;
};

// A client configuration with a small data region (2 slots of 64 KiB).
[[nodiscard]] transport::TransportConfig smallRegionConfig();

// The answer carries `error` and `status`.
void expectRefused(const Answer& a, std::int32_t error, wire::TransportStatus status, const char* what);

// The bytes of a file; empty when it cannot be read.
[[nodiscard]] std::vector<std::byte> readFile(const char* path);

}  // namespace flyt::test
