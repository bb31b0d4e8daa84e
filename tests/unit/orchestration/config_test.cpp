// orchestrator.toml: the shipped file is the defaults; mistakes name the file, line and key.
#include <gtest/gtest.h>

#include "flyt/orchestration/config.hpp"

namespace fo = flyt::orchestration;

namespace {

flyt::transport::Result<fo::OrchestratorConfig> parse(std::string_view text) {
  return fo::orchestratorConfigFromToml(toml::parse(text), "test.toml");
}

}  // namespace

TEST(OrchestratorConfig, TheShippedFileHoldsTheDefaults) {
  auto table = toml::parse_file(FLYT_CONFIG_DIR "/orchestrator.toml");
  auto config = fo::orchestratorConfigFromToml(table, "orchestrator.toml");
  ASSERT_TRUE(config) << config.error().message;
  const fo::OrchestratorConfig defaults;
  EXPECT_EQ(config->listen, defaults.listen);
  EXPECT_EQ(config->placement, defaults.placement);
  EXPECT_EQ(config->heartbeatMs, defaults.heartbeatMs);
  EXPECT_EQ(config->nodeTimeoutMs, defaults.nodeTimeoutMs);
  EXPECT_EQ(config->grantTtlMs, defaults.grantTtlMs);
  EXPECT_EQ(config->sessionOverheadMib, defaults.sessionOverheadMib);
  EXPECT_EQ(config->sessionIdleTimeoutS, defaults.sessionIdleTimeoutS);
  EXPECT_EQ(config->logLevel, defaults.logLevel);
  EXPECT_TRUE(fo::checkConfig(*config));
}

TEST(OrchestratorConfig, ReadsEveryKey) {
  auto config = parse(
      "[orchestrator]\nlisten = \"0.0.0.0:7100\"\ndatabase = \"/tmp/o.db\"\nplacement = \"spread\"\n"
      "heartbeat_ms = 200\nnode_timeout_ms = 900\ngrant_ttl_ms = 5000\nsession_overhead_mib = 0\n"
      "session_idle_timeout_s = 60\n[log]\nlevel = \"debug\"\n");
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->listen, "0.0.0.0:7100");
  EXPECT_EQ(config->database, "/tmp/o.db");
  EXPECT_EQ(config->placement, fo::PlacementPolicy::kSpread);
  EXPECT_EQ(config->heartbeatMs, 200u);
  EXPECT_EQ(config->nodeTimeoutMs, 900u);
  EXPECT_EQ(config->grantTtlMs, 5000u);
  EXPECT_EQ(config->sessionOverheadMib, 0u);
  EXPECT_EQ(config->sessionIdleTimeoutS, 60u);
  EXPECT_EQ(config->logLevel, "debug");
}

TEST(OrchestratorConfig, MistakesNameTheFileLineAndKey) {
  auto unknown = parse("[orchestrator]\n\nbogus = 1\n");
  ASSERT_FALSE(unknown);
  EXPECT_NE(unknown.error().message.find("test.toml:3: unknown key 'orchestrator.bogus'"), std::string::npos)
      << unknown.error().message;
  auto wrongType = parse("[orchestrator]\nheartbeat_ms = \"fast\"\n");
  ASSERT_FALSE(wrongType);
  EXPECT_EQ(wrongType.error().message, "test.toml:2: orchestrator.heartbeat_ms must be an integer");
  auto placement = parse("[orchestrator]\nplacement = \"random\"\n");
  ASSERT_FALSE(placement);
  EXPECT_NE(placement.error().message.find("unknown placement 'random'"), std::string::npos);
  auto table = parse("[node]\nname = \"x\"\n");
  ASSERT_FALSE(table);
  EXPECT_NE(table.error().message.find("unknown table 'node'"), std::string::npos);
}

TEST(OrchestratorConfig, NodeTimeoutMustExceedTheHeartbeat) {
  fo::OrchestratorConfig config;
  config.heartbeatMs = 1000;
  config.nodeTimeoutMs = 1000;
  EXPECT_FALSE(fo::checkConfig(config));
}
