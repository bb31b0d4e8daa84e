#include "tcp_framing.hpp"

#include <capnp/any.h>
#include <kj/exception.h>

#include <algorithm>

#include <fmt/format.h>

namespace flyt::transport::tcp {

Result<void> checkHeader(const FrameHeader& header, const TransportConfig& config) {
  if (header.magic != kFrameMagic) {
    return fail(Errc::kMalformed,
                fmt::format("bad frame magic 0x{:08x} (expected 0x{:08x}): not a Flyt TCP peer, or "
                            "the stream lost its framing",
                            header.magic, kFrameMagic));
  }
  if (header.version != kFrameVersion || header.flags != 0) {
    return fail(Errc::kMalformed, fmt::format("frame version {} flags 0x{:x} (this side speaks "
                                              "version {} with no flags)",
                                              header.version, header.flags, kFrameVersion));
  }
  if (header.messageBytes == 0 || header.messageBytes % sizeof(capnp::word) != 0) {
    return fail(Errc::kMalformed,
                fmt::format("message length {} is not a positive multiple of 8", header.messageBytes));
  }
  if (header.messageBytes > config.maxMessageBytes) {
    return fail(Errc::kMalformed, fmt::format("message length {} exceeds the {}-byte limit",
                                              header.messageBytes, config.maxMessageBytes));
  }
  if (header.payloadBytes > config.maxPayloadBytes) {
    return fail(Errc::kMalformed, fmt::format("payload length {} exceeds the {}-byte limit",
                                              header.payloadBytes, config.maxPayloadBytes));
  }
  return {};
}

std::uint64_t encodeSegmentTable(kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments,
                                 std::vector<std::uint32_t>& table) {
  // [segment count - 1][size of each segment in words][0 padding to an 8-byte boundary]
  table.assign((segments.size() + 2) & ~std::size_t{1}, 0);
  table[0] = static_cast<std::uint32_t>(segments.size() - 1);
  std::uint64_t bytes = table.size() * sizeof(std::uint32_t);
  for (std::size_t i = 0; i < segments.size(); ++i) {
    table[i + 1] = static_cast<std::uint32_t>(segments[i].size());
    bytes += segments[i].size() * sizeof(capnp::word);
  }
  return bytes;
}

Result<kj::Array<kj::ArrayPtr<const capnp::word>>> splitSegments(
    kj::ArrayPtr<const capnp::word> message) {
  const auto* table = reinterpret_cast<const std::uint32_t*>(message.begin());
  const std::uint64_t count = std::uint64_t{table[0]} + 1;
  if (count > kMaxSegments) {
    return fail(Errc::kMalformed, fmt::format("segment table announces {} segments (at most {})",
                                              count, kMaxSegments));
  }
  const std::uint64_t tableWords = (count + 2) / 2;
  if (tableWords > message.size()) {
    return fail(Errc::kMalformed,
                fmt::format("segment table of {} segments does not fit in a {}-byte message", count,
                            message.size() * sizeof(capnp::word)));
  }
  std::uint64_t total = tableWords;
  for (std::uint64_t i = 0; i < count; ++i) total += table[i + 1];
  if (total != message.size()) {
    return fail(Errc::kMalformed,
                fmt::format("segment table accounts for {} words but the frame carries {}", total,
                            message.size()));
  }
  auto segments = kj::heapArray<kj::ArrayPtr<const capnp::word>>(count);
  const capnp::word* next = message.begin() + tableWords;
  for (std::uint64_t i = 0; i < count; ++i) {
    segments[i] = kj::arrayPtr(next, table[i + 1]);
    next += table[i + 1];
  }
  if (segments[0].size() == 0) {
    return fail(Errc::kMalformed, "first segment is empty: the message has no root pointer");
  }
  return segments;
}

capnp::ReaderOptions readerOptions(std::size_t words) {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = std::max<std::uint64_t>(options.traversalLimitInWords, words * 2);
  return options;
}

Result<void> checkDecodes(kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) {
  std::size_t words = 0;
  for (auto segment : segments) words += segment.size();
  kj::Maybe<kj::Exception> problem = kj::runCatchingExceptions([&] {
    capnp::SegmentArrayMessageReader probe(segments, readerOptions(words));
    (void)probe.getRoot<capnp::AnyPointer>().targetSize();
  });
  KJ_IF_MAYBE (e, problem) {
    return fail(Errc::kMalformed,
                fmt::format("undecodable Cap'n Proto message: {}", e->getDescription().cStr()));
  }
  return {};
}

}  // namespace flyt::transport::tcp
