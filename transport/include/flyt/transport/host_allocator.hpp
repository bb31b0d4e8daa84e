// Allocator for pinned host memory (what cudaMallocHost / cudaHostAlloc return under Flyt): every
// allocation lies inside one region segment the serving side has registered, so a copy from or to it
// becomes a BulkRef and one DMA, with no staging.
//
// First fit over per-segment free lists (address-ordered, coalescing). Segments are obtained on demand
// from a grow function (DataRegion creates and announces them) and kept until the allocator dies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "flyt/transport/error.hpp"
#include "flyt/transport/segment.hpp"

namespace flyt::transport {

// Where a host pointer lies in the region: what a BulkRef needs.
struct RegionRef {
  std::uint32_t segment = 0;
  std::uint64_t offset = 0;  // from the start of the segment
};

class HostAllocator {
 public:
  static constexpr std::uint64_t kDefaultAlignment = 256;  // cudaMallocHost returns at least this
  static constexpr std::uint64_t kGranule = 64;            // sizes are rounded up to this

  // Must return a mapped segment with at least `dataBytes` usable bytes after kSegmentDataOffset.
  // The view must stay valid as long as the allocator lives.
  using GrowFn = std::function<Result<SegmentView>(std::uint64_t dataBytes)>;

  // `chunkBytes`: the smallest data area requested from `grow` (bigger requests get their own size).
  HostAllocator(GrowFn grow, std::uint64_t chunkBytes);

  HostAllocator(const HostAllocator&) = delete;
  HostAllocator& operator=(const HostAllocator&) = delete;

  // `bytes` > 0; `alignment` a power of two up to 1 GiB. Returns a pointer aligned to `alignment` with
  // at least `bytes` usable bytes. Errors: kInvalidArgument for bad arguments, whatever `grow` failed
  // with when no segment had room. Thread-safe. `grow` is called with the allocator's lock held.
  [[nodiscard]] Result<void*> allocate(std::uint64_t bytes, std::uint64_t alignment = kDefaultAlignment);

  // `pointer` must be a value allocate() returned and not yet freed (kInvalidArgument otherwise).
  // Thread-safe.
  [[nodiscard]] Result<void> free(void* pointer);

  // The segment and offset of [pointer, pointer + length) when that range lies entirely inside one
  // live allocation; nullopt otherwise (pageable memory, a freed block, a range running past the end
  // of its allocation). A zero length needs `pointer` inside an allocation. Thread-safe.
  [[nodiscard]] std::optional<RegionRef> tryLookup(const void* pointer, std::uint64_t length) const;

  [[nodiscard]] std::uint64_t bytesInUse() const;  // sum of requested sizes of live allocations
  [[nodiscard]] std::size_t segmentCount() const;

 private:
  struct Arena {
    SegmentView segment;
    std::map<std::uint64_t, std::uint64_t> freeBlocks;  // offset -> length, within the segment
  };
  struct Allocation {
    std::size_t arena;
    std::uint64_t blockOffset;  // block start in the segment (may precede the aligned user pointer)
    std::uint64_t blockBytes;
    std::uint64_t userBytes;    // what the caller asked for
  };

  std::optional<void*> tryCarve(std::size_t arena, std::uint64_t bytes, std::uint64_t alignment);
  static void giveBack(Arena& arena, std::uint64_t offset, std::uint64_t length);

  GrowFn m_grow;
  std::uint64_t m_chunkBytes;
  mutable std::mutex m_mutex;
  std::vector<Arena> m_arenas;                          // guarded by m_mutex
  std::map<std::uintptr_t, Allocation> m_allocations;  // by user pointer; guarded by m_mutex
  std::uint64_t m_bytesInUse = 0;
};

}  // namespace flyt::transport
