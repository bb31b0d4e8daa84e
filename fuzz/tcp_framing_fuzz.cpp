// libFuzzer target: TcpChannel's frame decoding (tcp_framing.hpp), in the order receive() applies
// it. The input is what a peer sent: a 24-byte frame header, then the message bytes. The header is
// checked against small limits (1 MiB messages, 1 MiB payloads); the message that follows (as many
// bytes as the header announces, or the input is a truncated frame) is split into segments and
// decoded. Accepted frames must satisfy what receive() relies on: the segments cover the message
// exactly, and re-encoding their sizes gives the table that was received.
#include <capnp/message.h>
#include <kj/array.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <vector>

#include "flyt/transport/config.hpp"
#include "tcp_framing.hpp"

namespace ft = flyt::transport;
namespace tcp = flyt::transport::tcp;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  ::setenv("FLYT_LOG", "off", 0);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < sizeof(tcp::FrameHeader)) return 0;
  tcp::FrameHeader header{};
  std::memcpy(&header, data, sizeof header);
  ft::TransportConfig config;
  config.maxMessageBytes = 1 << 20;
  config.maxPayloadBytes = 1 << 20;
  if (!tcp::checkHeader(header, config)) return 0;
  // checkHeader's promises: a positive multiple of 8, within the limits.
  if (header.messageBytes == 0 || header.messageBytes % 8 != 0 ||
      header.messageBytes > config.maxMessageBytes || header.payloadBytes > config.maxPayloadBytes) {
    __builtin_trap();
  }
  const std::size_t available = size - sizeof header;
  if (header.messageBytes > available) return 0;  // the peer would still be sending
  auto words = kj::heapArray<capnp::word>(header.messageBytes / sizeof(capnp::word));
  std::memcpy(words.begin(), data + sizeof header, header.messageBytes);
  auto segments = tcp::splitSegments(words.asPtr().asConst());
  if (!segments) return 0;
  std::size_t covered = 0;
  for (auto segment : *segments) {
    if (segment.begin() < words.begin() || segment.end() > words.end()) __builtin_trap();
    covered += segment.size();
  }
  std::vector<std::uint32_t> table;
  const auto bytes = tcp::encodeSegmentTable(segments->asPtr(), table);
  if (bytes != header.messageBytes || (covered + table.size() / 2) * 8 != bytes ||
      std::memcmp(table.data(), words.begin(), (segments->size() + 1) * sizeof(std::uint32_t)) != 0) {
    __builtin_trap();
  }
  (void)tcp::checkDecodes(segments->asPtr());
  return 0;
}
