// Placement over plain rows: best-fit packs, spread spreads, capacity counts the per-session
// overhead, refusals say why per GPU and per node.
#include <gtest/gtest.h>

#include "flyt/orchestration/placement.hpp"

namespace fo = flyt::orchestration;

namespace {

constexpr std::uint64_t kGiB = 1ULL << 30;
constexpr std::uint64_t kOverhead = 512ULL << 20;

fo::NodeRecord node(const std::string& name) { return {name, "host-" + name, "shm://flyt", "tcp://x:7070", "cuda", 0, 0}; }
fo::GpuRecord gpu(const std::string& nodeName, const std::string& uuid, std::uint64_t memory = 80 * kGiB) {
  return {nodeName, uuid, "H100", 132, memory, false};
}
fo::SessionRecord session(const std::string& nodeName, const std::string& uuid, std::uint32_t sm, std::uint64_t memory) {
  fo::SessionRecord s;
  s.node = nodeName;
  s.gpuUuid = uuid;
  s.smPercent = sm;
  s.memoryBytes = memory;
  return s;
}

struct Cluster {
  std::vector<fo::NodeRecord> nodes = {node("node-a"), node("node-b")};
  std::vector<fo::GpuRecord> gpus = {gpu("node-a", "GPU-a0"), gpu("node-b", "GPU-b0")};
  std::vector<fo::SessionRecord> sessions;
  fo::UnavailableNodes unavailable;

  flyt::transport::Result<fo::GpuUsage> place(std::uint32_t sm, std::uint64_t memory, fo::PlacementPolicy policy) {
    return fo::place(fo::gpuUsage(gpus, sessions, kOverhead), nodes, unavailable, {sm, memory, kOverhead}, policy);
  }
};

}  // namespace

TEST(Placement, BestFitPicksTheFullestGpuThatFits) {
  Cluster c;
  c.sessions = {session("node-b", "GPU-b0", 50, 8 * kGiB)};
  auto chosen = c.place(25, 4 * kGiB, fo::PlacementPolicy::kBestFit);
  ASSERT_TRUE(chosen) << chosen.error().message;
  EXPECT_EQ(chosen->gpu.uuid, "GPU-b0");
}

TEST(Placement, SpreadPicksTheEmptiestGpu) {
  Cluster c;
  c.sessions = {session("node-a", "GPU-a0", 50, 8 * kGiB)};
  auto chosen = c.place(25, 4 * kGiB, fo::PlacementPolicy::kSpread);
  ASSERT_TRUE(chosen);
  EXPECT_EQ(chosen->gpu.uuid, "GPU-b0");
}

TEST(Placement, TiesGoToTheNodeNameThenTheUuid) {
  Cluster c;
  c.gpus.push_back(gpu("node-a", "GPU-a1"));
  std::reverse(c.gpus.begin(), c.gpus.end());
  for (auto policy : {fo::PlacementPolicy::kBestFit, fo::PlacementPolicy::kSpread}) {
    auto chosen = c.place(10, kGiB, policy);
    ASSERT_TRUE(chosen);
    EXPECT_EQ(chosen->gpu.uuid, "GPU-a0");
  }
}

TEST(Placement, BestFitBreaksEqualSmShareByFreeMemory) {
  Cluster c;
  c.sessions = {session("node-a", "GPU-a0", 50, 1 * kGiB), session("node-b", "GPU-b0", 50, 40 * kGiB)};
  auto chosen = c.place(25, kGiB, fo::PlacementPolicy::kBestFit);
  ASSERT_TRUE(chosen);
  EXPECT_EQ(chosen->gpu.uuid, "GPU-b0");
}

TEST(Placement, SmSharesNeverExceedAHundredPercent) {
  Cluster c;
  c.nodes = {node("node-a")};
  c.gpus = {gpu("node-a", "GPU-a0")};
  c.sessions = {session("node-a", "GPU-a0", 60, kGiB)};
  EXPECT_TRUE(c.place(40, kGiB, fo::PlacementPolicy::kBestFit));
  EXPECT_FALSE(c.place(41, kGiB, fo::PlacementPolicy::kBestFit));
}

TEST(Placement, MemoryCountsTheOverheadOfEverySession) {
  Cluster c;
  c.nodes = {node("node-a")};
  c.gpus = {gpu("node-a", "GPU-a0", 10 * kGiB)};
  // 4 GiB + 512 MiB used; 5.5 GiB free: a 5 GiB quota fits with its overhead, 5.25 GiB does not.
  c.sessions = {session("node-a", "GPU-a0", 10, 4 * kGiB)};
  EXPECT_TRUE(c.place(10, 5 * kGiB, fo::PlacementPolicy::kBestFit));
  EXPECT_FALSE(c.place(10, 5 * kGiB + (256ULL << 20), fo::PlacementPolicy::kBestFit));
}

TEST(Placement, RefusalNamesEachGpusFreeShareAndMemoryAndDownNodes) {
  Cluster c;
  c.sessions = {session("node-a", "GPU-a0", 75, 9 * kGiB + (512ULL << 20))};
  c.unavailable["node-b"] = "is down";
  auto chosen = c.place(50, 8 * kGiB, fo::PlacementPolicy::kBestFit);
  ASSERT_FALSE(chosen);
  EXPECT_EQ(chosen.error().message,
            "no GPU has 50% of its SMs and 8.5 GiB free (8.0 GiB quota + 512.0 MiB per-session overhead): "
            "node-a GPU-a0 has 25% and 70.0 GiB free; node-b is down");
}

TEST(Placement, RefusalSaysNoNodeIsUp) {
  Cluster c;
  c.unavailable = {{"node-a", "is down"}, {"node-b", "is down"}};
  auto chosen = c.place(10, kGiB, fo::PlacementPolicy::kBestFit);
  ASSERT_FALSE(chosen);
  EXPECT_EQ(chosen.error().message, "no GPU node is up: node-a is down; node-b is down");
}

TEST(Placement, RefusalSaysNoNodeRegistered) {
  Cluster c;
  c.nodes.clear();
  c.gpus.clear();
  auto chosen = c.place(10, kGiB, fo::PlacementPolicy::kBestFit);
  ASSERT_FALSE(chosen);
  EXPECT_EQ(chosen.error().message, "no GPU node has registered with the orchestrator");
}

TEST(Placement, UsageSumsSharesMemoryWithOverheadAndSessions) {
  const std::vector<fo::GpuRecord> gpus = {gpu("node-a", "GPU-a0")};
  const std::vector<fo::SessionRecord> sessions = {session("node-a", "GPU-a0", 30, kGiB),
                                                   session("node-a", "GPU-a0", 20, 2 * kGiB)};
  const auto usage = fo::gpuUsage(gpus, sessions, kOverhead);
  ASSERT_EQ(usage.size(), 1u);
  EXPECT_EQ(usage[0].smPercentUsed, 50u);
  EXPECT_EQ(usage[0].memoryUsed, 3 * kGiB + 2 * kOverhead);
  EXPECT_EQ(usage[0].sessions, 2u);
}
