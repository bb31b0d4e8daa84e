// One POSIX shared-memory segment of a session's data region, and the layout both sides agree on.
//
// Shared-memory layout of every region segment (all sizes are multiples of the page size):
//
//   [0, kSegmentDataOffset)   SegmentHeader, written once by the creator before the segment is
//                             announced, checked once by the attaching side; the rest of the first
//                             page is zero. Neither side trusts it afterwards, and resolve() never
//                             hands it out.
//   [kSegmentDataOffset, size) data: staging slots or pinned host allocations. BulkRef offsets count
//                             from the start of the segment (offset 0 is the header), so a valid
//                             BulkRef.offset is always >= kSegmentDataOffset.
//
// Names are "/flyt-region-<creator pid>-<session id, 16 hex digits>-<segment id>", so a sweep can tell
// which process created a file and whether it is still alive (see data_region.hpp for the lifecycle).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flyt/transport/error.hpp"

namespace flyt::transport {

enum class SegmentKind : std::uint32_t {
  kStagingRing = 0,  // the slot ring for staged (pageable) copies
  kHostMemory = 1,   // pinned host allocations (cudaMallocHost / cudaHostAlloc)
};

// What the creator announces to the attaching side (wire: SegmentInfo in session.capnp).
struct SegmentInfo {
  std::uint32_t id = 0;
  SegmentKind kind = SegmentKind::kHostMemory;
  std::string name;            // shm_open name, with its leading '/'
  std::uint64_t sizeBytes = 0;  // whole segment, header included, a page multiple
};

// A mapped segment as seen by hooks. `bytes` covers the whole mapping (header included): that is what
// the serving side registers with cudaHostRegister. Valid until the segment is unmapped.
struct SegmentView {
  std::uint32_t id = 0;
  SegmentKind kind = SegmentKind::kHostMemory;
  std::string_view name;
  std::span<std::byte> bytes;
};

inline constexpr std::uint64_t kSegmentMagic = 0x4e4f494745525446ULL;  // "FTREGION" little-endian
inline constexpr std::uint32_t kSegmentLayoutVersion = 1;
inline constexpr std::uint64_t kPageBytes = 4096;
inline constexpr std::uint64_t kSegmentDataOffset = kPageBytes;
inline constexpr std::string_view kSegmentNamePrefix = "flyt-region-";
// Largest segment either side accepts (a bogus announced size must not make us map terabytes).
inline constexpr std::uint64_t kMaxSegmentBytes = 1ULL << 40;

struct alignas(64) SegmentHeader {
  std::uint64_t magic;          // kSegmentMagic
  std::uint32_t layoutVersion;  // kSegmentLayoutVersion
  std::uint32_t segmentId;
  std::uint64_t sessionId;
  std::uint64_t sizeBytes;  // whole segment
  std::uint32_t creatorPid;
  std::uint32_t kind;        // SegmentKind
  std::uint64_t dataOffset;  // kSegmentDataOffset
  // The creator's mapping of the segment (0: none given). The attaching side maps the segment at the
  // same address when that range is free in its process (a hint, never forced: it is the peer's
  // word), so that pinned host memory has one address in both processes, as CUDA's unified
  // addressing promises: a kernel may be handed a pinned host pointer (cuMemHostGetDevicePointer).
  std::uint64_t creatorAddress;
  std::uint8_t reserved[8];
};
static_assert(sizeof(SegmentHeader) == 64, "SegmentHeader is shared-memory layout");
static_assert(alignof(SegmentHeader) == 64, "SegmentHeader is shared-memory layout");
static_assert(sizeof(SegmentHeader) <= kSegmentDataOffset);

[[nodiscard]] constexpr std::uint64_t alignUp(std::uint64_t value, std::uint64_t alignment) {
  return (value + alignment - 1) & ~(alignment - 1);
}

// An address where `bytes` (a multiple of `alignment`, a power of two) would fit in the largest hole
// of this process's address space, from /proc/self/maps: its middle for attempt 0, an eighth of the
// hole lower for each further attempt; nullopt when the hole is too small or the maps unreadable.
// Between the heap and the shared libraries of an x86-64 process lie tens of TiB that no process of
// the same program uses, so an address chosen there is most likely free in a peer process too (the
// worker maps pinned memory and managed ranges at the application's addresses).
[[nodiscard]] std::optional<std::uintptr_t> addressInLargestHole(std::uint64_t bytes, std::uint64_t alignment,
                                                                 int attempt = 0) noexcept;

// "/flyt-region-<pid>-<session hex>-<id>".
[[nodiscard]] std::string segmentName(std::uint32_t creatorPid, std::uint64_t sessionId,
                                      std::uint32_t segmentId);

// A mapping of one segment plus, optionally, the duty to unlink its name. Move-only.
// Destruction unmaps and, if it still holds the name, unlinks it (a missing name is not an error).
// Not thread-safe; owners guard it.
class Segment {
 public:
  // Creator side: shm_open(O_CREAT|O_EXCL, 0600), ftruncate, mmap(MAP_SHARED), write the header.
  // `sizeBytes` counts the whole segment and is rounded up to a page multiple. The new Segment holds
  // the name. `populate` pre-faults the pages (MAP_POPULATE); nothing is ever mlock'ed.
  [[nodiscard]] static Result<Segment> create(std::uint32_t id, SegmentKind kind,
                                              std::uint64_t sessionId, std::uint64_t sizeBytes,
                                              bool populate);

  // Serving side: open the announced name read-write, check the file size and the header against
  // `info` and `sessionId` (kMalformed on any mismatch, kSystem when the name is gone), map it.
  // The Segment holds the name too, so that the survivor of a crash can unlink it.
  [[nodiscard]] static Result<Segment> attach(const SegmentInfo& info, std::uint64_t sessionId,
                                              bool populate);

  Segment(Segment&& other) noexcept;
  Segment& operator=(Segment&& other) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();

  [[nodiscard]] std::uint32_t id() const noexcept { return m_id; }
  [[nodiscard]] SegmentKind kind() const noexcept { return m_kind; }
  [[nodiscard]] const std::string& name() const noexcept { return m_name; }
  [[nodiscard]] std::span<std::byte> bytes() const noexcept { return {m_base, m_size}; }
  [[nodiscard]] SegmentView view() const noexcept { return {m_id, m_kind, m_name, bytes()}; }
  [[nodiscard]] SegmentInfo info() const { return {m_id, m_kind, m_name, m_size}; }
  // True while this object will unlink the name on destruction.
  [[nodiscard]] bool holdsName() const noexcept { return m_holdsName; }

  // Removes the name from /dev/shm now (the mappings stay valid). Idempotent; a name someone else
  // already removed counts as success.
  [[nodiscard]] Result<void> unlinkName();

 private:
  Segment(std::uint32_t id, SegmentKind kind, std::string name, std::byte* base, std::uint64_t size);
  void reset() noexcept;

  std::uint32_t m_id = 0;
  SegmentKind m_kind = SegmentKind::kHostMemory;
  std::string m_name;
  std::byte* m_base = nullptr;
  std::uint64_t m_size = 0;
  bool m_holdsName = false;
};

// Removes region segment files under `shmDir` whose creator pid no longer exists (both sides of a
// session died). Returns the names removed. Files of live processes, and files that are not region
// segments, are left alone. Pids are those of this host's pid namespace: run it from a process that
// shares the applications' pid namespace (the node, or `flyt` itself at start-up).
[[nodiscard]] Result<std::vector<std::string>> sweepStaleSegments(std::string_view shmDir = "/dev/shm");

}  // namespace flyt::transport
