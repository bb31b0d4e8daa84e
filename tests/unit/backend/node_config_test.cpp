#include "node_config.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

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

TEST(NodeConfig, OrchestratorTokenComesFromAPrivateFileOrTheEnvironment) {
  char pattern[] = "/tmp/flyt-node-token-XXXXXX";
  const int fd = ::mkstemp(pattern);
  ASSERT_GE(fd, 0);
  const std::string path = pattern;
  const std::string secret = "node-secret-0123456789abcdef";
  ASSERT_EQ(::write(fd, secret.data(), secret.size()), ssize_t(secret.size()));
  ::close(fd);
  ::chmod(path.c_str(), 0600);
  const auto text = fmt::format("[node]\norchestrator = \"ctl1:7000\"\norchestrator_token_file = \"{}\"\n", path);
  auto config = nodeConfigFromToml(toml::parse(text), "node.toml");
  ASSERT_TRUE(config) << config.error().describe();
  EXPECT_EQ(config->orchestratorToken, secret);

  ::chmod(path.c_str(), 0644);
  auto open = nodeConfigFromToml(toml::parse(text), "node.toml");
  ASSERT_FALSE(open);
  EXPECT_EQ(open.error().message, fmt::format("node.toml:3: node.orchestrator_token_file: '{}' has mode 0644: others "
                                              "may read it; chmod 600 it",
                                              path));
  ::unlink(path.c_str());

  ::setenv("FLYT_NODE_TOKEN", "node-secret-from-the-environment", 1);
  auto fromEnv = applyNodeEnv(NodeConfig{});
  ::setenv("FLYT_NODE_TOKEN", "short", 1);
  auto tooShort = applyNodeEnv(NodeConfig{});
  ::unsetenv("FLYT_NODE_TOKEN");
  ASSERT_TRUE(fromEnv) << fromEnv.error().describe();
  EXPECT_EQ(fromEnv->orchestratorToken, "node-secret-from-the-environment");
  ASSERT_FALSE(tooShort);
  EXPECT_EQ(tooShort.error().message,
            "FLYT_NODE_TOKEN is 5 bytes; it must have at least 16 (e.g. `openssl rand -hex 32`)");
  EXPECT_TRUE(NodeConfig{}.orchestratorToken.empty());
}

}  // namespace
}  // namespace flyt::backend
