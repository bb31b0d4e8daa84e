#include "flyt/transport/host_allocator.hpp"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <thread>

#include "flyt/transport/data_region.hpp"

namespace ft = flyt::transport;

namespace {

std::uint64_t sessionCounter = 0xa110'0000'0000ULL;

struct AllocatorFixture {
  std::vector<ft::SegmentView> created;
  std::unique_ptr<ft::DataRegion> region;

  explicit AllocatorFixture(std::uint64_t chunk = 1 << 20) {
    ft::TransportConfig config;
    config.regionSlots = 1;
    config.regionSlotBytes = 4096;
    region = *ft::DataRegion::create(++sessionCounter, config,
                                     {.hostChunkBytes = chunk,
                                      .onCreated = [this](const ft::SegmentView& v) -> ft::Result<void> {
                                        created.push_back(v);
                                        return {};
                                      }});
  }
  ft::HostAllocator& alloc() { return region->hostAllocator(); }
};

}  // namespace

TEST(HostAllocator, HonoursAlignmentsFromSixtyFourBytesToTwoMebibytes) {
  AllocatorFixture f;
  for (std::uint64_t alignment = 1; alignment <= (2 << 20); alignment <<= 1) {
    auto p = f.alloc().allocate(100, alignment);
    ASSERT_TRUE(p) << alignment << ": " << p.error().describe();
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(*p) % alignment, 0u) << alignment;
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(*p) % ft::HostAllocator::kGranule, 0u);
  }
  EXPECT_EQ(f.alloc().allocate(100, 3).error().code, ft::Errc::kInvalidArgument);
  EXPECT_EQ(f.alloc().allocate(0).error().code, ft::Errc::kInvalidArgument);
}

TEST(HostAllocator, ManyAllocationsAndFreesNeverOverlapAndReuseSpace) {
  AllocatorFixture f;
  std::mt19937_64 rng(7);
  std::map<std::byte*, std::pair<std::uint64_t, std::uint8_t>> live;
  std::uint64_t liveBytes = 0;
  std::uint64_t peakLiveBytes = 0;
  for (int round = 0; round < 4000; ++round) {
    if (!live.empty() && rng() % 3 == 0) {
      auto it = std::next(live.begin(), static_cast<long>(rng() % live.size()));
      const auto [size, tag] = it->second;
      for (std::uint64_t i = 0; i < size; i += 97) {
        ASSERT_EQ(std::to_integer<std::uint8_t>(it->first[i]), tag) << "allocation was overwritten";
      }
      ASSERT_TRUE(f.alloc().free(it->first));
      liveBytes -= size;
      live.erase(it);
      continue;
    }
    const std::uint64_t size = 1 + rng() % 20000;
    auto p = f.alloc().allocate(size, std::uint64_t{1} << (rng() % 13));
    ASSERT_TRUE(p) << p.error().describe();
    const auto tag = static_cast<std::uint8_t>(round);
    std::memset(*p, tag, size);
    live.emplace(static_cast<std::byte*>(*p), std::pair{size, tag});
    liveBytes += size;
    peakLiveBytes = std::max(peakLiveBytes, liveBytes);
  }
  std::uint64_t inUse = 0;
  for (auto& [p, v] : live) inUse += v.first;
  EXPECT_EQ(f.alloc().bytesInUse(), inUse);
  for (auto& [p, v] : live) ASSERT_TRUE(f.alloc().free(p));
  EXPECT_EQ(f.alloc().bytesInUse(), 0u);
  const std::size_t segments = f.alloc().segmentCount();
  // Freed space is reused: the segments hold at most twice the peak of live bytes, plus one chunk.
  EXPECT_LE(static_cast<std::uint64_t>(segments) << 20, 2 * peakLiveBytes + (1 << 20))
      << segments << " segments for a peak of " << peakLiveBytes << " live bytes";
  // After everything is freed, a chunk-sized allocation fits in the existing first segment again.
  ASSERT_TRUE(f.alloc().allocate((1 << 20) - 4096));
  EXPECT_EQ(f.alloc().segmentCount(), segments);
}

TEST(HostAllocator, LookupFindsInteriorRangesWithTheirSegmentAndOffset) {
  AllocatorFixture f;
  auto p = f.alloc().allocate(10000);
  ASSERT_TRUE(p);
  auto* base = static_cast<std::byte*>(*p);
  const ft::SegmentView& seg = f.created.back();
  const std::uint64_t offset = static_cast<std::uint64_t>(base - seg.bytes.data());
  auto whole = f.alloc().tryLookup(base, 10000);
  ASSERT_TRUE(whole);
  EXPECT_EQ(whole->segment, seg.id);
  EXPECT_EQ(whole->offset, offset);
  EXPECT_GE(whole->offset, ft::kSegmentDataOffset);
  auto inner = f.alloc().tryLookup(base + 1234, 5000);
  ASSERT_TRUE(inner);
  EXPECT_EQ(inner->offset, offset + 1234);
  EXPECT_TRUE(f.alloc().tryLookup(base + 9999, 1));
  EXPECT_TRUE(f.alloc().tryLookup(base + 500, 0));
}

TEST(HostAllocator, LookupRejectsRangesPastTheAllocationAndForeignMemory) {
  AllocatorFixture f;
  auto a = f.alloc().allocate(10000);
  auto b = f.alloc().allocate(10000);
  ASSERT_TRUE(a && b);
  auto* pa = static_cast<std::byte*>(*a);
  EXPECT_FALSE(f.alloc().tryLookup(pa, 10001)) << "one byte past the requested size";
  EXPECT_FALSE(f.alloc().tryLookup(pa + 9000, 2000));
  EXPECT_FALSE(f.alloc().tryLookup(pa + 100, ~0ULL)) << "a length that would wrap";
  EXPECT_FALSE(f.alloc().tryLookup(pa + 10000, 0));
  EXPECT_FALSE(f.alloc().tryLookup(pa - 64, 128)) << "range starting before the allocation";
  std::vector<char> pageable(100);
  EXPECT_FALSE(f.alloc().tryLookup(pageable.data(), 10));
  ASSERT_TRUE(f.alloc().free(pa));
  EXPECT_FALSE(f.alloc().tryLookup(pa, 1)) << "freed memory is no longer in the region";
  EXPECT_EQ(f.alloc().free(pa).error().code, ft::Errc::kInvalidArgument) << "double free";
  EXPECT_EQ(f.alloc().free(pageable.data()).error().code, ft::Errc::kInvalidArgument);
}

TEST(HostAllocator, NewSegmentsAreCreatedOnDemandAndAnnouncedToTheHook) {
  AllocatorFixture f(1 << 20);
  ASSERT_EQ(f.created.size(), 1u);  // the ring
  EXPECT_EQ(f.created[0].kind, ft::SegmentKind::kStagingRing);
  ASSERT_TRUE(f.alloc().allocate(600 << 10));
  ASSERT_EQ(f.created.size(), 2u);
  EXPECT_EQ(f.created[1].kind, ft::SegmentKind::kHostMemory);
  EXPECT_EQ(f.created[1].bytes.size(), (1u << 20) + ft::kSegmentDataOffset);
  ASSERT_TRUE(f.alloc().allocate(300 << 10));
  EXPECT_EQ(f.created.size(), 2u) << "fits in the existing chunk";
  auto big = f.alloc().allocate(5 << 20);
  ASSERT_TRUE(big);
  ASSERT_EQ(f.created.size(), 3u);
  EXPECT_GE(f.created[2].bytes.size(), (5u << 20) + ft::kSegmentDataOffset);
  EXPECT_EQ(f.alloc().tryLookup(*big, 5 << 20)->segment, f.created[2].id);
  std::set<std::uint32_t> ids;
  for (const auto& s : f.created) ids.insert(s.id);
  EXPECT_EQ(ids, (std::set<std::uint32_t>{0, 1, 2}));
}

TEST(HostAllocator, ConcurrentAllocationsFromSeveralThreadsDoNotOverlap) {
  AllocatorFixture f(256 << 10);
  constexpr int kThreads = 4;
  std::vector<std::vector<std::pair<std::byte*, std::uint64_t>>> got(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 300; ++i) {
        const std::uint64_t size = 64 + rng() % 8000;
        auto p = f.alloc().allocate(size);
        ASSERT_TRUE(p);
        std::memset(*p, t, size);
        got[t].emplace_back(static_cast<std::byte*>(*p), size);
        if (i % 2 == 1) {
          auto [q, qs] = got[t][got[t].size() - 2];
          ASSERT_TRUE(f.alloc().free(q));
          got[t].erase(got[t].end() - 2);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) {
    for (auto [p, size] : got[t]) {
      for (std::uint64_t i = 0; i < size; i += 61) {
        ASSERT_EQ(std::to_integer<int>(p[i]), t);
      }
      ASSERT_TRUE(f.alloc().tryLookup(p, size));
    }
  }
}
