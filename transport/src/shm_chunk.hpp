// The ShmChannel chunk format: one Flyt message per iceoryx chunk. Private to the shm transport.
//
// All little-endian, offsets in bytes from the start of the chunk's user payload:
//   FrameHeader (136 bytes = 17 words): magic "FLYT", version 1, segmentCount (1..15),
//     payloadOffset, payloadSize, segments[15] {offsetWords, sizeWords};
//   the Cap'n Proto segments, each 8-byte aligned, where the header says;
//   the inline payload, 8-byte aligned, after the segments.
// The sender builds the message in place: ChunkBuilder hands capnp segments carved out of the chunk,
// so nothing is copied. Only a message that outgrows its chunk is copied once into a larger chunk
// (copySegments). The receiver validates the header against the chunk size, then reads the segments
// in place with SegmentArrayMessageReader after one full traversal (AnyPointer::targetSize) that
// makes any malformed pointer throw inside ChunkReader::parse, where it becomes Errc::kMalformed.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include <capnp/message.h>
#include <capnp/serialize.h>

#include "flyt/transport/error.hpp"

namespace flyt::transport::shm {

using capnp::word;

constexpr std::uint32_t kMagic = 0x54594c46;  // "FLYT"; also marks the set-up messages and control block
constexpr std::uint32_t kVersion = 1;       // of the frame format
constexpr std::uint32_t kSetupVersion = 3;  // of ConnectRequest and the ControlBlock (2: chunk windows, 3: lanes)
constexpr std::uint32_t kMaxSegments = 15;

// Chunk tiers, by a chunk's size alone (so both ends agree whatever their configurations): calls and
// small replies (up to 4 KiB), up to 64 KiB, up to 256 KiB + kMessageHeadroom (inline copies below
// the staging threshold and their replies), and larger. A sender keeps at most kTierWindow[t]
// chunks of tier t that its receiver has not released yet (ControlBlock::released), which bounds
// what one session takes from the host's shared pools; shmChunkClasses sizes the pools from it.
constexpr std::uint32_t kMessageHeadroom = 64U << 10;
constexpr std::uint32_t kMediumChunkBytes = (256U << 10) + kMessageHeadroom;
constexpr std::size_t kTiers = 4;
constexpr std::uint32_t kTierWindow[kTiers] = {32, 4, 2, 1};
constexpr std::size_t chunkTier(std::uint64_t bytes) {
  if (bytes <= (4U << 10)) return 0;
  if (bytes <= (64U << 10)) return 1;
  if (bytes <= kMediumChunkBytes) return 2;
  return 3;
}
constexpr std::size_t kFirstSegmentWords = 1024;

struct SegmentRef {
  std::uint32_t offsetWords;
  std::uint32_t sizeWords;
};
struct FrameHeader {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t segmentCount;
  std::uint32_t payloadOffset;
  std::uint32_t payloadSize;
  SegmentRef segments[kMaxSegments];
};
static_assert(sizeof(FrameHeader) == 136 && alignof(FrameHeader) == 4);
constexpr std::size_t kHeaderWords = (sizeof(FrameHeader) + 7) / 8;

constexpr std::size_t roundUp8(std::size_t n) { return (n + 7) & ~std::size_t{7}; }

// A MessageBuilder whose segments are carved, zeroed, out of `words` words at `area` (a chunk, after
// its header); heap segments only when the area is full (then overflowed() and the sender copies
// the message into a larger chunk). Does not own `area`.
class ChunkBuilder final : public capnp::MessageBuilder {
 public:
  ChunkBuilder(word* area, std::size_t words, std::size_t firstSegmentWords = kFirstSegmentWords)
      : m_area(area), m_words(words), m_firstSegmentWords(firstSegmentWords) {}
  kj::ArrayPtr<word> allocateSegment(capnp::uint minimumSize) override;
  [[nodiscard]] bool overflowed() const { return m_overflowed; }
  [[nodiscard]] std::size_t allocatedWords() const { return m_used; }

 private:
  word* m_area;
  std::size_t m_words;
  std::size_t m_firstSegmentWords;
  std::size_t m_used = 0;
  std::uint32_t m_segments = 0;
  bool m_overflowed = false;
  std::vector<kj::Array<word>> m_heap;
};

// Records in `header` where `segments` (built in place inside `chunk`) lie; returns the payload's
// offset, right after the builder's area.
std::size_t describeInPlace(const word* chunk, kj::ArrayPtr<const kj::ArrayPtr<const word>> segments,
                            std::size_t allocatedWords, FrameHeader& header);

// Copies `segments` (at most kMaxSegments) into `chunk` after the header, records them in `header`
// and returns the payload's offset. The chunk must hold kHeaderWords plus every segment.
std::size_t copySegments(word* chunk, kj::ArrayPtr<const kj::ArrayPtr<const word>> segments,
                         FrameHeader& header);

// Writes the payload at `payloadOffset` and then the header into `chunk`.
void finishFrame(void* chunk, FrameHeader header, std::size_t payloadOffset, std::span<const std::byte> payload);

// Reads one received chunk in place. Does not own the chunk, which must outlive it.
class ChunkReader {
 public:
  // Validates the frame in the `chunkBytes` bytes at `chunk`; kMalformed says what is wrong.
  [[nodiscard]] Result<void> parse(const void* chunk, std::uint32_t chunkBytes);
  // Valid after a successful parse().
  capnp::MessageReader& reader() { return *m_reader; }
  [[nodiscard]] std::span<const std::byte> payload() const { return m_payload; }

 private:
  std::array<kj::ArrayPtr<const word>, kMaxSegments> m_segments{};
  std::span<const std::byte> m_payload;
  std::unique_ptr<capnp::SegmentArrayMessageReader> m_reader;
};

}  // namespace flyt::transport::shm
