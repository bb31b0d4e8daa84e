#include "flyt/transport/slot_ring.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
namespace ft = flyt::transport;

namespace {

struct RingFixture {
  std::vector<std::byte> area = std::vector<std::byte>(4 * 4096);
  ft::SlotRing ring{area, 3, 4096, 4, 4096};
};

}  // namespace

TEST(SlotRing, HandsOutSlotsInRingOrderWithBulkRefCoordinates) {
  RingFixture f;
  for (std::uint64_t seq = 0; seq < 10; ++seq) {
    auto slot = f.ring.acquire(1s);
    ASSERT_TRUE(slot) << slot.error().describe();
    EXPECT_EQ(slot->sequence, seq);
    EXPECT_EQ(slot->index, seq % 4);
    EXPECT_EQ(slot->segment, 3u);
    EXPECT_EQ(slot->offset, 4096 + (seq % 4) * 4096);
    EXPECT_EQ(slot->bytes.data(), f.area.data() + (seq % 4) * 4096);
    EXPECT_EQ(slot->bytes.size(), 4096u);
    ASSERT_TRUE(f.ring.release(slot->index));
  }
}

TEST(SlotRing, TimesOutWhenEverySlotIsInFlight) {
  RingFixture f;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(f.ring.acquire(1s));
  }
  const auto start = std::chrono::steady_clock::now();
  auto slot = f.ring.acquire(30ms);
  ASSERT_FALSE(slot);
  EXPECT_EQ(slot.error().code, ft::Errc::kTimeout);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);
  EXPECT_EQ(f.ring.inFlight(), 4u);
}

TEST(SlotRing, WaitsForTheNextSlotInRingOrderEvenWhenALaterOneIsFree) {
  RingFixture f;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(f.ring.acquire(1s));
  }
  ASSERT_TRUE(f.ring.release(2));  // slot 0 is next in ring order and still held
  EXPECT_EQ(f.ring.acquire(20ms).error().code, ft::Errc::kTimeout);
  std::thread releaser([&] {
    std::this_thread::sleep_for(20ms);
    ASSERT_TRUE(f.ring.release(0));
  });
  auto slot = f.ring.acquire(5s);
  releaser.join();
  ASSERT_TRUE(slot);
  EXPECT_EQ(slot->index, 0u);
  EXPECT_EQ(slot->sequence, 4u);
}

TEST(SlotRing, RejectsReleaseOfASlotThatIsNotHeld) {
  RingFixture f;
  EXPECT_EQ(f.ring.release(1).error().code, ft::Errc::kInvalidArgument);
  EXPECT_EQ(f.ring.release(99).error().code, ft::Errc::kInvalidArgument);
  auto slot = f.ring.acquire(1s);
  ASSERT_TRUE(f.ring.release(slot->index));
  EXPECT_EQ(f.ring.release(slot->index).error().code, ft::Errc::kInvalidArgument);
}

TEST(SlotRing, ParallelFillersNeverShareASlotAndSequencesStayDense) {
  RingFixture f;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 500;
  std::atomic<int> owners[4] = {};
  std::vector<std::vector<std::uint64_t>> sequences(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto slot = f.ring.acquire(5s);
        ASSERT_TRUE(slot);
        EXPECT_EQ(owners[slot->index].fetch_add(1), 0) << "slot handed out twice";
        slot->bytes[0] = std::byte(t);
        sequences[t].push_back(slot->sequence);
        owners[slot->index].fetch_sub(1);
        ASSERT_TRUE(f.ring.release(slot->index));
      }
    });
  }
  for (auto& th : threads) th.join();
  std::set<std::uint64_t> all;
  for (const auto& s : sequences) all.insert(s.begin(), s.end());
  EXPECT_EQ(all.size(), std::size_t{kThreads * kPerThread});
  EXPECT_EQ(*all.rbegin(), std::uint64_t{kThreads * kPerThread - 1});
  EXPECT_EQ(f.ring.inFlight(), 0u);
}
