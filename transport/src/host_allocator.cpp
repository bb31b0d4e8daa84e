#include "flyt/transport/host_allocator.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace flyt::transport {

namespace {

constexpr std::uint64_t kMaxAlignment = 1ULL << 30;

}  // namespace

HostAllocator::HostAllocator(GrowFn grow, std::uint64_t chunkBytes)
    : m_grow(std::move(grow)), m_chunkBytes(alignUp(std::max<std::uint64_t>(chunkBytes, kPageBytes), kPageBytes)) {}

Result<void*> HostAllocator::allocate(std::uint64_t bytes, std::uint64_t alignment) {
  if (bytes == 0 || bytes > kMaxSegmentBytes) {
    return fail(Errc::kInvalidArgument,
                fmt::format("host allocation of {} bytes (must be in (0, {}])", bytes, kMaxSegmentBytes));
  }
  if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment > kMaxAlignment) {
    return fail(Errc::kInvalidArgument,
                fmt::format("host allocation alignment {} is not a power of two up to {}", alignment,
                            kMaxAlignment));
  }
  // Offsets stay multiples of the granule, so padding in front of an aligned block is too.
  alignment = std::max(alignment, kGranule);
  const std::uint64_t rounded = alignUp(bytes, kGranule);
  std::lock_guard lock(m_mutex);
  for (std::size_t i = 0; i < m_arenas.size(); ++i) {
    if (auto p = tryCarve(i, rounded, alignment)) {
      m_allocations.at(reinterpret_cast<std::uintptr_t>(*p)).userBytes = bytes;
      m_bytesInUse += bytes;
      return *p;
    }
  }
  // Segments are page-aligned, so an alignment above a page may need up to `alignment` of padding.
  const std::uint64_t slack = alignment > kPageBytes ? alignment : 0;
  auto segment = m_grow(std::max(m_chunkBytes, alignUp(rounded + slack, kPageBytes)));
  if (!segment) {
    return std::unexpected(std::move(segment.error()));
  }
  Arena arena{*segment, {}};
  giveBack(arena, kSegmentDataOffset, segment->bytes.size() - kSegmentDataOffset);
  m_arenas.push_back(std::move(arena));
  auto p = tryCarve(m_arenas.size() - 1, rounded, alignment);
  if (!p) {
    return fail(Errc::kInvalidArgument,
                fmt::format("new segment {} of {} bytes cannot hold {} bytes aligned to {}",
                            segment->id, segment->bytes.size(), bytes, alignment));
  }
  m_allocations.at(reinterpret_cast<std::uintptr_t>(*p)).userBytes = bytes;
  m_bytesInUse += bytes;
  return *p;
}

std::optional<void*> HostAllocator::tryCarve(std::size_t index, std::uint64_t bytes,
                                             std::uint64_t alignment) {
  Arena& arena = m_arenas[index];
  const auto base = reinterpret_cast<std::uintptr_t>(arena.segment.bytes.data());
  for (auto it = arena.freeBlocks.begin(); it != arena.freeBlocks.end(); ++it) {
    const auto [offset, length] = *it;
    const std::uint64_t pad = alignUp(base + offset, alignment) - (base + offset);
    if (pad > length || bytes > length - pad) {
      continue;
    }
    arena.freeBlocks.erase(it);
    if (pad > 0) {
      arena.freeBlocks.emplace(offset, pad);
    }
    const std::uint64_t tail = length - pad - bytes;
    if (tail > 0) {
      arena.freeBlocks.emplace(offset + pad + bytes, tail);
    }
    auto* user = arena.segment.bytes.data() + offset + pad;
    m_allocations.emplace(reinterpret_cast<std::uintptr_t>(user),
                          Allocation{index, offset + pad, bytes, bytes});
    return user;
  }
  return std::nullopt;
}

void HostAllocator::giveBack(Arena& arena, std::uint64_t offset, std::uint64_t length) {
  auto& blocks = arena.freeBlocks;
  auto next = blocks.lower_bound(offset);
  if (next != blocks.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      offset = prev->first;
      length += prev->second;
      blocks.erase(prev);
    }
  }
  if (next != blocks.end() && offset + length == next->first) {
    length += next->second;
    blocks.erase(next);
  }
  blocks.emplace(offset, length);
}

Result<void> HostAllocator::free(void* pointer) {
  std::lock_guard lock(m_mutex);
  auto it = m_allocations.find(reinterpret_cast<std::uintptr_t>(pointer));
  if (it == m_allocations.end()) {
    return fail(Errc::kInvalidArgument,
                fmt::format("free of {} which is not a live region host allocation", pointer));
  }
  const Allocation a = it->second;
  m_allocations.erase(it);
  m_bytesInUse -= a.userBytes;
  giveBack(m_arenas[a.arena], a.blockOffset, a.blockBytes);
  return {};
}

std::optional<RegionRef> HostAllocator::tryLookup(const void* pointer, std::uint64_t length) const {
  const auto p = reinterpret_cast<std::uintptr_t>(pointer);
  std::lock_guard lock(m_mutex);
  auto it = m_allocations.upper_bound(p);
  if (it == m_allocations.begin()) {
    return std::nullopt;
  }
  --it;
  const std::uintptr_t start = it->first;
  const Allocation& a = it->second;
  const std::uint64_t into = p - start;
  // Written so that no sum can wrap: `into` < userBytes first, then length within what is left.
  if (into >= a.userBytes || length > a.userBytes - into) {
    return std::nullopt;
  }
  return RegionRef{m_arenas[a.arena].segment.id, a.blockOffset + into};
}

std::uint64_t HostAllocator::bytesInUse() const {
  std::lock_guard lock(m_mutex);
  return m_bytesInUse;
}

std::size_t HostAllocator::segmentCount() const {
  std::lock_guard lock(m_mutex);
  return m_arenas.size();
}

}  // namespace flyt::transport
