#include "flyt/transport/data_region.hpp"

#include <fmt/format.h>

namespace flyt::transport {

// ---- client side ---------------------------------------------------------------------------------

DataRegion::DataRegion(std::uint64_t sessionId, RegionOptions options)
    : m_sessionId(sessionId), m_options(std::move(options)) {}

Result<std::unique_ptr<DataRegion>> DataRegion::create(std::uint64_t sessionId,
                                                       const TransportConfig& config,
                                                       RegionOptions options) {
  const std::uint64_t slots = config.regionSlots;
  const std::uint64_t slotBytes = alignUp(config.regionSlotBytes, kPageBytes);
  if (slots == 0 || slotBytes == 0 || config.regionSlotBytes > kMaxSegmentBytes ||
      slotBytes > (kMaxSegmentBytes - kSegmentDataOffset) / slots) {
    return fail(Errc::kInvalidArgument,
                fmt::format("staging ring of {} slots of {} bytes is empty or larger than {} bytes",
                            config.regionSlots, config.regionSlotBytes, kMaxSegmentBytes));
  }
  std::unique_ptr<DataRegion> region(new DataRegion(sessionId, std::move(options)));
  auto ring = region->addSegment(SegmentKind::kStagingRing, kSegmentDataOffset + slots * slotBytes);
  if (!ring) {
    return std::unexpected(std::move(ring.error()));
  }
  region->m_ring = std::make_unique<SlotRing>(ring->bytes.subspan(kSegmentDataOffset, slots * slotBytes),
                                              ring->id, kSegmentDataOffset,
                                              static_cast<std::uint32_t>(slots), slotBytes);
  DataRegion* self = region.get();
  region->m_allocator = std::make_unique<HostAllocator>(
      [self](std::uint64_t dataBytes) {
        return self->addSegment(SegmentKind::kHostMemory, kSegmentDataOffset + dataBytes);
      },
      region->m_options.hostChunkBytes);
  return region;
}

DataRegion::~DataRegion() {
  // The allocator and ring only point into segments; drop them first, then unmap and unlink.
  m_allocator.reset();
  m_ring.reset();
  std::lock_guard lock(m_mutex);
  m_segments.clear();
}

Result<SegmentView> DataRegion::addSegment(SegmentKind kind, std::uint64_t sizeBytes) {
  std::uint32_t id = 0;
  {
    std::lock_guard lock(m_mutex);
    id = m_nextId++;
  }
  auto segment = Segment::create(id, kind, m_sessionId, sizeBytes, m_options.populate);
  if (!segment) {
    return std::unexpected(std::move(segment.error()));
  }
  auto owned = std::make_unique<Segment>(std::move(*segment));
  const SegmentView view = owned->view();
  if (m_options.onCreated) {
    if (auto ok = m_options.onCreated(view); !ok) {
      return std::unexpected(std::move(ok.error()));  // `owned` unmaps and unlinks
    }
  }
  std::lock_guard lock(m_mutex);
  m_segments.emplace(id, std::move(owned));
  return view;
}

std::vector<SegmentInfo> DataRegion::segments() const {
  std::lock_guard lock(m_mutex);
  std::vector<SegmentInfo> out;
  out.reserve(m_segments.size());
  for (const auto& [id, segment] : m_segments) {
    out.push_back(segment->info());
  }
  return out;
}

Result<void> DataRegion::handoffComplete(std::uint32_t id) {
  std::lock_guard lock(m_mutex);
  auto it = m_segments.find(id);
  if (it == m_segments.end()) {
    return fail(Errc::kInvalidArgument,
                fmt::format("handoff of segment {} which session {:016x} never created", id, m_sessionId));
  }
  return it->second->unlinkName();
}

// ---- serving side --------------------------------------------------------------------------------

AttachedRegion::AttachedRegion(std::uint64_t sessionId, AttachOptions options)
    : m_sessionId(sessionId), m_options(std::move(options)) {}

AttachedRegion::~AttachedRegion() {
  std::lock_guard lock(m_mutex);
  for (auto& [id, segment] : m_segments) {
    if (m_options.onUnmapping) {
      m_options.onUnmapping(segment->view());
    }
  }
  m_segments.clear();  // each Segment unlinks its name (ENOENT ignored) and unmaps
}

Result<SegmentView> AttachedRegion::attachSegment(const SegmentInfo& info) {
  {
    std::lock_guard lock(m_mutex);
    if (m_segments.contains(info.id)) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("segment {} ({}) is already attached to session {:016x}", info.id,
                              info.name, m_sessionId));
    }
  }
  auto segment = Segment::attach(info, m_sessionId, m_options.populate);
  if (!segment) {
    return std::unexpected(std::move(segment.error()));
  }
  auto owned = std::make_unique<Segment>(std::move(*segment));
  const SegmentView view = owned->view();
  if (m_options.onMapped) {
    if (auto ok = m_options.onMapped(view); !ok) {
      return fail(ok.error().code, fmt::format("registering segment {} ({}): {}", info.id, info.name,
                                               ok.error().message),
                  ok.error().sysErrno);
    }
  }
  std::lock_guard lock(m_mutex);
  if (!m_segments.emplace(info.id, std::move(owned)).second) {
    // A concurrent attach of the same id won; undo ours.
    if (m_options.onUnmapping) {
      m_options.onUnmapping(view);
    }
    return fail(Errc::kInvalidArgument,
                fmt::format("segment {} ({}) was attached twice concurrently", info.id, info.name));
  }
  return view;
}

Result<void> AttachedRegion::detachSegment(std::uint32_t id) {
  std::unique_ptr<Segment> segment;
  {
    std::lock_guard lock(m_mutex);
    auto it = m_segments.find(id);
    if (it == m_segments.end()) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("detach of segment {} which session {:016x} has not attached", id,
                              m_sessionId));
    }
    segment = std::move(it->second);
    m_segments.erase(it);
  }
  if (m_options.onUnmapping) {
    m_options.onUnmapping(segment->view());
  }
  return {};
}

Result<std::span<std::byte>> AttachedRegion::resolve(std::uint32_t id, std::uint64_t offset,
                                                     std::uint64_t length) const {
  std::lock_guard lock(m_mutex);
  auto it = m_segments.find(id);
  if (it == m_segments.end()) {
    return fail(Errc::kOutOfRange,
                fmt::format("bulk reference to segment {} (offset {}, length {}): session {:016x} has no "
                            "such segment",
                            id, offset, length, m_sessionId));
  }
  const std::span<std::byte> bytes = it->second->bytes();
  const std::uint64_t size = bytes.size();
  // No sum is formed before both terms are known to be in range, so nothing can wrap.
  if (offset < kSegmentDataOffset || offset > size || length > size - offset) {
    return fail(Errc::kOutOfRange,
                fmt::format("bulk reference outside segment {}: offset {} + length {} not within data "
                            "bytes [{}, {})",
                            id, offset, length, kSegmentDataOffset, size));
  }
  return bytes.subspan(offset, length);
}

void AttachedRegion::unlinkNames() {
  std::lock_guard lock(m_mutex);
  for (auto& [id, segment] : m_segments) {
    (void)segment->unlinkName();
  }
}

std::size_t AttachedRegion::segmentCount() const {
  std::lock_guard lock(m_mutex);
  return m_segments.size();
}

}  // namespace flyt::transport
