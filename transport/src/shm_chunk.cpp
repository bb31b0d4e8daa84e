// The ShmChannel chunk format; see shm_chunk.hpp.
#include "shm_chunk.hpp"

#include <algorithm>
#include <cstring>

#include <capnp/any.h>
#include <fmt/format.h>
#include <kj/exception.h>

namespace flyt::transport::shm {

kj::ArrayPtr<word> ChunkBuilder::allocateSegment(capnp::uint minimumSize) {
  const std::size_t remaining = m_words - m_used;
  std::size_t size = std::max<std::size_t>(minimumSize, m_used == 0 ? m_firstSegmentWords : m_used);
  if (size > remaining && minimumSize <= remaining) size = remaining;
  if (size <= remaining && m_segments < kMaxSegments) {
    word* start = m_area + m_used;
    std::memset(start, 0, size * sizeof(word));
    m_used += size;
    ++m_segments;
    return {start, size};
  }
  m_overflowed = true;
  m_heap.push_back(kj::heapArray<word>(size));
  std::memset(m_heap.back().begin(), 0, size * sizeof(word));
  return m_heap.back();
}

std::size_t describeInPlace(const word* chunk, kj::ArrayPtr<const kj::ArrayPtr<const word>> segments,
                            std::size_t allocatedWords, FrameHeader& header) {
  header.segmentCount = static_cast<std::uint16_t>(segments.size());
  for (std::size_t i = 0; i < segments.size(); ++i) {
    header.segments[i] = {static_cast<std::uint32_t>(segments[i].begin() - chunk),
                          static_cast<std::uint32_t>(segments[i].size())};
  }
  return (kHeaderWords + allocatedWords) * sizeof(word);
}

std::size_t copySegments(word* chunk, kj::ArrayPtr<const kj::ArrayPtr<const word>> segments,
                         FrameHeader& header) {
  word* dst = chunk + kHeaderWords;
  header.segmentCount = static_cast<std::uint16_t>(segments.size());
  for (std::size_t i = 0; i < segments.size(); ++i) {
    std::memcpy(dst, segments[i].begin(), segments[i].size() * sizeof(word));
    header.segments[i] = {static_cast<std::uint32_t>(dst - chunk), static_cast<std::uint32_t>(segments[i].size())};
    dst += segments[i].size();
  }
  return static_cast<std::size_t>(dst - chunk) * sizeof(word);
}

void finishFrame(void* chunk, FrameHeader header, std::size_t payloadOffset, std::span<const std::byte> payload) {
  header.payloadOffset = static_cast<std::uint32_t>(payloadOffset);
  if (!payload.empty()) std::memcpy(static_cast<std::byte*>(chunk) + payloadOffset, payload.data(), payload.size());
  std::memcpy(chunk, &header, sizeof(header));
}

Result<void> ChunkReader::parse(const void* chunk, std::uint32_t chunkBytes) {
  const auto* bytes = static_cast<const std::byte*>(chunk);
  if (chunkBytes < kHeaderWords * sizeof(word)) {
    return fail(Errc::kMalformed, fmt::format("shm chunk of {} bytes is smaller than a frame header", chunkBytes));
  }
  FrameHeader header;
  std::memcpy(&header, bytes, sizeof(header));
  if (header.magic != kMagic || header.version != kVersion || header.segmentCount == 0 ||
      header.segmentCount > kMaxSegments) {
    return fail(Errc::kMalformed, fmt::format("shm frame header is invalid (magic {:#x}, version {}, {} segments)",
                                              header.magic, header.version, header.segmentCount));
  }
  const std::uint64_t chunkWords = chunkBytes / sizeof(word);
  std::uint64_t totalWords = 0;
  for (unsigned i = 0; i < header.segmentCount; ++i) {
    const auto& ref = header.segments[i];
    if (ref.offsetWords < kHeaderWords || ref.sizeWords == 0 ||
        std::uint64_t{ref.offsetWords} + ref.sizeWords > chunkWords) {
      return fail(Errc::kMalformed, fmt::format("shm segment {} (word {} + {}) lies outside the {}-byte chunk", i,
                                                ref.offsetWords, ref.sizeWords, chunkBytes));
    }
    m_segments[i] = {reinterpret_cast<const word*>(bytes) + ref.offsetWords, ref.sizeWords};
    totalWords += ref.sizeWords;
  }
  if (std::uint64_t{header.payloadOffset} + header.payloadSize > chunkBytes) {
    return fail(Errc::kMalformed, fmt::format("shm payload ({} + {} bytes) lies outside the {}-byte chunk",
                                              header.payloadOffset, header.payloadSize, chunkBytes));
  }
  m_payload = {bytes + header.payloadOffset, header.payloadSize};
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 4 * totalWords + 1024;  // the check below and the caller's reads
  try {
    m_reader = std::make_unique<capnp::SegmentArrayMessageReader>(kj::arrayPtr(m_segments.data(), header.segmentCount),
                                                                  options);
    (void)m_reader->getRoot<capnp::AnyPointer>().targetSize();
  } catch (const kj::Exception& e) {
    return fail(Errc::kMalformed, fmt::format("shm message failed validation: {}", e.getDescription().cStr()));
  }
  return {};
}

}  // namespace flyt::transport::shm
