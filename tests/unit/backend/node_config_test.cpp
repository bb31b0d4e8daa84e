#include "node_config.hpp"

#include <gtest/gtest.h>

namespace flyt::backend {
namespace {

TEST(NodeConfig, ShippedNodeTomlLoadsAndMatchesTheDefaults) {
  const std::string path = std::string(FLYT_CONFIG_DIR) + "/node.toml";
  auto table = transport::loadTomlFile(path);
  ASSERT_TRUE(table) << table.error().describe();
  auto config = nodeConfigFromToml(*table, path);
  ASSERT_TRUE(config) << config.error().describe();
  const NodeConfig defaults;
  EXPECT_EQ(config->shmName, defaults.shmName);
  EXPECT_EQ(config->orchestrator, "");
  EXPECT_EQ(config->mps, "auto");
  EXPECT_EQ(config->sessionLimits.memoryBytes, 0u);
  EXPECT_EQ(config->sessionLimits.smPercent, 0u);
  EXPECT_EQ(config->sessionLimits.idleTimeoutS, 0u);
}

TEST(NodeConfig, ClusterKeysAreCheckedWithFileAndLine) {
  auto table = toml::parse("[node]\norchestrator = 'ctl1:7000'\nname = 'gpu-1'\nmps = 'manage'\n");
  auto config = nodeConfigFromToml(table, "node.toml");
  ASSERT_TRUE(config) << config.error().describe();
  EXPECT_EQ(config->orchestrator, "ctl1:7000");
  EXPECT_EQ(config->name, "gpu-1");
  EXPECT_EQ(config->mps, "manage");

  auto badName = toml::parse("[node]\nname = 'a b'\n");
  auto refused = nodeConfigFromToml(badName, "node.toml");
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("node.toml:2"), std::string::npos) << refused.error().message;
  auto badMps = toml::parse("[node]\nmps = 'sometimes'\n");
  EXPECT_FALSE(nodeConfigFromToml(badMps, "node.toml"));
  auto badKey = toml::parse("[node]\norchestrater = 'x'\n");
  auto unknown = nodeConfigFromToml(badKey, "node.toml");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("unknown key 'node.orchestrater'"), std::string::npos);
}

}  // namespace
}  // namespace flyt::backend
