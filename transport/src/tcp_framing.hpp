// Frame layout and message validation for TcpChannel. The wire format itself is described at the top
// of tcp_channel.cpp; this header pins the fixed header and holds the pure (socket-free) checks.
#pragma once

#include <capnp/message.h>
#include <kj/array.h>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "flyt/transport/config.hpp"
#include "flyt/transport/error.hpp"

namespace flyt::transport::tcp {

// The header is written and read as raw bytes; Flyt runs on little-endian hosts only.
static_assert(std::endian::native == std::endian::little, "TcpChannel frames are little-endian");

inline constexpr std::uint32_t kFrameMagic = 0x54594c46;  // the bytes 'F' 'L' 'Y' 'T' on the wire
inline constexpr std::uint16_t kFrameVersion = 1;
// Cap'n Proto's own stream reader refuses more segments than this; so do we.
inline constexpr std::uint32_t kMaxSegments = 512;

struct FrameHeader {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t flags;         // reserved, must be 0
  std::uint64_t messageBytes;  // segment table + segments, a multiple of 8
  std::uint64_t payloadBytes;  // inline payload that follows the message
};
static_assert(sizeof(FrameHeader) == 24);
static_assert(alignof(FrameHeader) == 8);
static_assert(offsetof(FrameHeader, magic) == 0);
static_assert(offsetof(FrameHeader, version) == 4);
static_assert(offsetof(FrameHeader, flags) == 6);
static_assert(offsetof(FrameHeader, messageBytes) == 8);
static_assert(offsetof(FrameHeader, payloadBytes) == 16);

// Checks a received header against the format and the configured limits (before anything is
// allocated for it). kMalformed with a message naming the offending field and value.
[[nodiscard]] Result<void> checkHeader(const FrameHeader& header, const TransportConfig& config);

// Writes the standard-serialisation segment table for `segments` into `table` (padded to a whole
// number of words). Returns the message size in bytes (table + segments).
std::uint64_t encodeSegmentTable(kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments,
                                 std::vector<std::uint32_t>& table);

// Splits a received message (segment table + segments, exactly `message.size()` words) into its
// segments, checking that the table accounts for every word. The result points into `message`.
[[nodiscard]] Result<kj::Array<kj::ArrayPtr<const capnp::word>>> splitSegments(
    kj::ArrayPtr<const capnp::word> message);

// Reader options sized for a message of `words` words (traversal limit never below capnp's default).
[[nodiscard]] capnp::ReaderOptions readerOptions(std::size_t words);

// Walks every pointer of the message once, so that a message whose pointers leave its segments is
// rejected here (kMalformed, with capnp's description) rather than deep inside a handler.
[[nodiscard]] Result<void> checkDecodes(kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments);

}  // namespace flyt::transport::tcp
