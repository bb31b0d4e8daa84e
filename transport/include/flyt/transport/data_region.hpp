// The session's data region: POSIX shared-memory segments created by the client (application) side
// and mapped by both sides. Bulk data lying in a segment travels as a BulkRef (segment id, offset,
// length) instead of inside a message.
//
//   DataRegion      client side. Creates segment 0, the staging ring (config.regionSlots slots of
//                   config.regionSlotBytes), and host-memory segments on demand for the pinned-host
//                   allocator (cudaMallocHost). Announces each new segment through `onCreated`.
//   AttachedRegion  serving side. Maps announced segments (attachSegment), calls `onMapped` for each
//                   (cudaHostRegister) and `onUnmapping` before unmapping (cudaHostUnregister), and
//                   resolves BulkRefs with bounds checks (resolve).
//
// Lifecycle of a segment name, so that /dev/shm keeps no leftovers whoever dies:
//
//   1. The client creates "/flyt-region-<pid>-<session>-<id>" (O_CREAT|O_EXCL, mode 0600), maps it,
//      writes the header, and calls onCreated (the session sends RegionUpdate.added).
//   2. The server maps it (attachSegment: size and header checked, onMapped called) and answers
//      (RegionAck.mapped). The client then calls handoffComplete(id), which unlinks the name. From here
//      on the memory lives exactly as long as one of the two mappings: nothing can leak.
//   3. Crashes before step 2 completes:
//      - server dies: the client unlinks every name it still holds when the DataRegion is destroyed
//        (the session tears it down when the channel reports kDisconnected);
//      - client dies: the server, on kDisconnected, calls AttachedRegion::unlinkNames() or simply
//        destroys the AttachedRegion, whose destructor unlinks the names it attached (ENOENT ignored);
//      - both die: sweepStaleSegments() (segment.hpp) removes region files whose creator pid is gone;
//        the node runs it at start-up and when it reaps a session.
//   Segments the server never attached are also covered by the client's destructor and by the sweep.
//
// Mappings stay valid (and spans handed out stay usable) until the region that made them is destroyed,
// or, on the serving side, until detachSegment() for that segment.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "flyt/transport/config.hpp"
#include "flyt/transport/error.hpp"
#include "flyt/transport/host_allocator.hpp"
#include "flyt/transport/segment.hpp"
#include "flyt/transport/slot_ring.hpp"

namespace flyt::transport {

// Called once per segment, after it is mapped. A failure undoes the creation or attachment and is
// returned to whoever asked for the segment. Called without the region's lock held.
using SegmentHook = std::function<Result<void>(const SegmentView&)>;
// Called once per segment just before it is unmapped (the view is still valid during the call).
using SegmentUnmapHook = std::function<void(const SegmentView&)>;

inline constexpr std::uint32_t kRingSegmentId = 0;

struct RegionOptions {
  // Smallest data area of a host-memory segment; bigger allocations get a segment of their own size.
  std::uint64_t hostChunkBytes = 64ULL << 20;
  // Pre-fault mappings (MAP_POPULATE). Memory is never locked.
  bool populate = false;
  // Client: a segment was created (announce it). May be empty.
  SegmentHook onCreated;
};

// Client side. Thread-safe.
class DataRegion {
 public:
  // Creates the ring segment (id kRingSegmentId) from config.regionSlots / config.regionSlotBytes
  // (slot size rounded up to a page multiple) and calls options.onCreated for it.
  // Errors: kInvalidArgument for a zero or overflowing ring, kSystem from shm_open/ftruncate/mmap,
  // or the hook's error.
  [[nodiscard]] static Result<std::unique_ptr<DataRegion>> create(std::uint64_t sessionId,
                                                                  const TransportConfig& config,
                                                                  RegionOptions options = {});

  // Unmaps every segment and unlinks the names still held.
  ~DataRegion();
  DataRegion(const DataRegion&) = delete;
  DataRegion& operator=(const DataRegion&) = delete;

  [[nodiscard]] std::uint64_t sessionId() const noexcept { return m_sessionId; }
  [[nodiscard]] SlotRing& ring() noexcept { return *m_ring; }
  [[nodiscard]] HostAllocator& hostAllocator() noexcept { return *m_allocator; }

  // Descriptors of every segment created so far (for a RegionUpdate or for diagnostics).
  [[nodiscard]] std::vector<SegmentInfo> segments() const;

  // The server reported segment `id` mapped: unlink its name now. Idempotent.
  // kInvalidArgument for an unknown id, kSystem if shm_unlink fails.
  [[nodiscard]] Result<void> handoffComplete(std::uint32_t id);

 private:
  DataRegion(std::uint64_t sessionId, RegionOptions options);
  Result<SegmentView> addSegment(SegmentKind kind, std::uint64_t sizeBytes);

  std::uint64_t m_sessionId;
  RegionOptions m_options;
  mutable std::mutex m_mutex;
  std::map<std::uint32_t, std::unique_ptr<Segment>> m_segments;  // guarded by m_mutex
  std::uint32_t m_nextId = kRingSegmentId;                        // guarded by m_mutex
  std::unique_ptr<SlotRing> m_ring;
  std::unique_ptr<HostAllocator> m_allocator;
};

struct AttachOptions {
  SegmentHook onMapped;           // e.g. cudaHostRegister; may be empty
  SegmentUnmapHook onUnmapping;   // e.g. cudaHostUnregister; may be empty
  bool populate = false;
};

// Serving side. Thread-safe; resolve() may run concurrently with attachSegment().
class AttachedRegion {
 public:
  AttachedRegion(std::uint64_t sessionId, AttachOptions options);
  // Calls onUnmapping for each segment, unmaps it and unlinks its name (a name already gone is fine).
  ~AttachedRegion();
  AttachedRegion(const AttachedRegion&) = delete;
  AttachedRegion& operator=(const AttachedRegion&) = delete;

  // Maps an announced segment and runs onMapped. Errors: kInvalidArgument if the id is already
  // attached; kMalformed if the name, size or header do not match the announcement; kSystem if the
  // name cannot be opened or mapped; the hook's error (the segment is then unmapped again).
  [[nodiscard]] Result<SegmentView> attachSegment(const SegmentInfo& info);

  // Runs onUnmapping and unmaps. Spans resolved in this segment become invalid.
  // kInvalidArgument for an unknown id.
  [[nodiscard]] Result<void> detachSegment(std::uint32_t id);

  // The bytes a BulkRef names: [offset, offset + length) of segment `id`, which must lie inside the
  // segment's data area [kSegmentDataOffset, size). kOutOfRange, naming segment, offset, length and
  // size, otherwise (also for an unknown id, or an offset + length that would wrap). The span stays
  // valid until the segment is detached or the region destroyed.
  [[nodiscard]] Result<std::span<std::byte>> resolve(std::uint32_t id, std::uint64_t offset,
                                                     std::uint64_t length) const;

  // The client is gone: remove the names of all attached segments now (mappings stay valid).
  void unlinkNames();

  [[nodiscard]] std::size_t segmentCount() const;

 private:
  std::uint64_t m_sessionId;
  AttachOptions m_options;
  mutable std::mutex m_mutex;
  std::map<std::uint32_t, std::unique_ptr<Segment>> m_segments;  // guarded by m_mutex
};

}  // namespace flyt::transport
