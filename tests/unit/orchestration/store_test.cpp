// Store on a real SQLite file in a temporary directory: what is written survives closing and
// reopening, the journal is WAL, the file is private.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "flyt/orchestration/store.hpp"

namespace fo = flyt::orchestration;

namespace {

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/flyt-store-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    m_dir = pattern;
    m_path = m_dir + "/state/orchestrator.db";
  }
  void TearDown() override { std::filesystem::remove_all(m_dir); }

  fo::Store open() {
    auto store = fo::Store::open(m_path);
    EXPECT_TRUE(store.has_value()) << (store ? "" : store.error().describe());
    return std::move(*store);
  }

  std::string m_dir;
  std::string m_path;
};

fo::SessionRecord sessionOn(std::uint64_t id, const std::string& tenant, const std::string& node) {
  fo::SessionRecord s;
  s.id = id;
  s.tenant = tenant;
  s.node = node;
  s.gpuUuid = "GPU-a";
  s.smPercent = 50;
  s.memoryBytes = 8ULL << 30;
  s.clientName = "train.py";
  s.pid = 4242;
  s.createdMs = 1000;
  s.grantExpiresMs = 31000;
  return s;
}

}  // namespace

TEST_F(StoreTest, ReopeningKeepsTenantsNodesGpusSessionsAndMeta) {
  {
    auto store = open();
    ASSERT_TRUE(store.setMeta("signing_key", "00ff"));
    ASSERT_TRUE(store.putTenant({"vm1", "hash1", 50, 8ULL << 30, 2, 123}));
    ASSERT_TRUE(store.putNode({"node-a", "host-1", "shm://flyt", "tcp://10.0.0.5:7070", "cuda", 900, 800},
                              {{"node-a", "GPU-a", "H200", 132, 140ULL << 30, true}}));
    // The top bit set: ids are unsigned, SQLite integers signed.
    auto session = sessionOn(0xfedcba9876543210ULL, "vm1", "node-a");
    session.state = fo::SessionState::kActive;
    ASSERT_TRUE(store.putSession(session));
  }
  auto store = open();
  EXPECT_EQ(store.meta("signing_key").value(), std::optional<std::string>("00ff"));
  const auto tenants = store.tenants().value();
  ASSERT_EQ(tenants.size(), 1u);
  EXPECT_EQ(tenants[0].name, "vm1");
  EXPECT_EQ(tenants[0].tokenHash, "hash1");
  EXPECT_EQ(tenants[0].memoryBytes, 8ULL << 30);
  EXPECT_EQ(tenants[0].maxSessions, 2u);
  const auto nodes = store.nodes().value();
  ASSERT_EQ(nodes.size(), 1u);
  EXPECT_EQ(nodes[0].tcpEndpoint, "tcp://10.0.0.5:7070");
  EXPECT_EQ(nodes[0].lastSeenMs, 900);
  const auto gpus = store.gpus().value();
  ASSERT_EQ(gpus.size(), 1u);
  EXPECT_EQ(gpus[0].smCount, 132u);
  EXPECT_TRUE(gpus[0].mps);
  const auto sessions = store.sessions().value();
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(sessions[0].id, 0xfedcba9876543210ULL);
  EXPECT_EQ(sessions[0].state, fo::SessionState::kActive);
  EXPECT_EQ(sessions[0].clientName, "train.py");
  EXPECT_EQ(sessions[0].grantExpiresMs, 31000);
}

TEST_F(StoreTest, UsesWalJournalAndAPrivateFile) {
  auto store = open();
  EXPECT_EQ(store.journalMode().value(), "wal");
  struct stat info {};
  ASSERT_EQ(::stat(m_path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
}

TEST_F(StoreTest, RemovingATenantRemovesItsSessionsOnly) {
  auto store = open();
  ASSERT_TRUE(store.putTenant({"vm1", "h", 50, 1 << 30, 1, 0}));
  ASSERT_TRUE(store.putTenant({"vm2", "h", 50, 1 << 30, 1, 0}));
  ASSERT_TRUE(store.putNode({"node-a", "host", "shm://flyt", "", "standin", 0, 0}, {}));
  ASSERT_TRUE(store.putSession(sessionOn(1, "vm1", "node-a")));
  ASSERT_TRUE(store.putSession(sessionOn(2, "vm2", "node-a")));
  const auto removed = store.removeTenant("vm1").value();
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].id, 1u);
  EXPECT_FALSE(store.tenant("vm1").value().has_value());
  ASSERT_EQ(store.sessions().value().size(), 1u);
  EXPECT_EQ(store.sessions().value()[0].id, 2u);
}

TEST_F(StoreTest, RemovingANodesSessionsAnswersThem) {
  auto store = open();
  ASSERT_TRUE(store.putTenant({"vm1", "h", 10, 1 << 30, 5, 0}));
  ASSERT_TRUE(store.putNode({"node-a", "host", "shm://flyt", "", "standin", 0, 0}, {}));
  ASSERT_TRUE(store.putNode({"node-b", "host", "shm://flyt", "", "standin", 0, 0}, {}));
  ASSERT_TRUE(store.putSession(sessionOn(1, "vm1", "node-a")));
  ASSERT_TRUE(store.putSession(sessionOn(2, "vm1", "node-b")));
  EXPECT_EQ(store.removeSessionsOfNode("node-a").value().size(), 1u);
  EXPECT_TRUE(store.removeSession(2).value());
  EXPECT_FALSE(store.removeSession(2).value());
  EXPECT_TRUE(store.sessions().value().empty());
}

TEST_F(StoreTest, ATransactionNotCommittedLeavesNothing) {
  auto store = open();
  {
    auto txn = store.transaction();
    ASSERT_TRUE(store.putTenant({"vm1", "h", 50, 1 << 30, 1, 0}));
  }
  EXPECT_TRUE(store.tenants().value().empty());
  {
    auto txn = store.transaction();
    ASSERT_TRUE(store.putTenant({"vm1", "h", 50, 1 << 30, 1, 0}));
    ASSERT_TRUE(txn.commit());
  }
  EXPECT_EQ(store.tenants().value().size(), 1u);
}

TEST_F(StoreTest, ASessionOfAnUnknownTenantIsRefused) {
  auto store = open();
  ASSERT_TRUE(store.putNode({"node-a", "host", "shm://flyt", "", "standin", 0, 0}, {}));
  EXPECT_FALSE(store.putSession(sessionOn(1, "nobody", "node-a")).has_value());
}
