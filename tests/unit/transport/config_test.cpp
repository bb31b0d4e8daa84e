#include "flyt/transport/config.hpp"
#include "flyt/transport/orchestrator_client.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <cstdio>

using flyt::transport::Errc;
using flyt::transport::TransportConfig;

TEST(TransportConfig, DefaultsBoundADeadPeerToTwoSeconds) {
  TransportConfig config;
  EXPECT_LE(config.peerTimeout.count(), 2000);
}

TEST(TransportConfig, ReadsKeysFromTheTransportTable) {
  auto table = toml::parse("[transport]\npeer_timeout_ms = 500\nregion_slots = 4\n");
  auto config = flyt::transport::transportConfigFromToml(table, "node.toml");
  ASSERT_TRUE(config) << config.error().describe();
  EXPECT_EQ(config->peerTimeout.count(), 500);
  EXPECT_EQ(config->regionSlots, 4u);
  EXPECT_EQ(config->maxMessageBytes, TransportConfig{}.maxMessageBytes);
}

TEST(TransportConfig, RejectsUnknownKeyNamingFileLineAndKey) {
  auto table = toml::parse("[transport]\npeer_timeout_ms = 500\npeer_timout_ms = 1\n");
  auto config = flyt::transport::transportConfigFromToml(table, "node.toml");
  ASSERT_FALSE(config);
  EXPECT_EQ(config.error().code, Errc::kInvalidArgument);
  EXPECT_NE(config.error().message.find("node.toml:3"), std::string::npos) << config.error().message;
  EXPECT_NE(config.error().message.find("peer_timout_ms"), std::string::npos);
}

TEST(TransportConfig, RejectsWrongTypeAndOutOfRangeValues) {
  auto wrongType = toml::parse("[transport]\npeer_timeout_ms = \"fast\"\n");
  EXPECT_FALSE(flyt::transport::transportConfigFromToml(wrongType, "x.toml"));
  auto tooSmall = toml::parse("[transport]\nregion_slots = 1\n");
  auto config = flyt::transport::transportConfigFromToml(tooSmall, "x.toml");
  ASSERT_FALSE(config);
  EXPECT_NE(config.error().message.find("region_slots"), std::string::npos);
}

TEST(TransportConfig, EnvironmentOverridesAndRejectsGarbage) {
  ::setenv("FLYT_PEER_TIMEOUT_MS", "750", 1);
  auto config = flyt::transport::transportConfigFromEnv();
  ASSERT_TRUE(config) << config.error().describe();
  EXPECT_EQ(config->peerTimeout.count(), 750);
  ::setenv("FLYT_PEER_TIMEOUT_MS", "75O", 1);
  auto bad = flyt::transport::transportConfigFromEnv();
  ::unsetenv("FLYT_PEER_TIMEOUT_MS");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("FLYT_PEER_TIMEOUT_MS"), std::string::npos);
}

TEST(TransportConfig, DescribesEveryKeyWithItsVariable) {
  const auto text = flyt::transport::describeTransportKeys();
  EXPECT_NE(text.find("transport.peer_timeout_ms (FLYT_PEER_TIMEOUT_MS, default 2000)"),
            std::string::npos);
  EXPECT_NE(text.find("transport.region_slot_bytes"), std::string::npos);
}

TEST(TransportConfig, ShippedConfigFilesLoadAndMatchTheDefaults) {
  for (const char* name : {"client.toml", "node.toml"}) {
    const std::string path = std::string(FLYT_CONFIG_DIR) + "/" + name;
    auto table = flyt::transport::loadTomlFile(path);
    ASSERT_TRUE(table) << table.error().describe();
    auto config = flyt::transport::transportConfigFromToml(*table, path);
    ASSERT_TRUE(config) << config.error().describe();
    const TransportConfig defaults;
    EXPECT_EQ(config->peerTimeout, defaults.peerTimeout) << path;
    EXPECT_EQ(config->connectTimeout, defaults.connectTimeout) << path;
    EXPECT_EQ(config->sessionStartTimeout, defaults.sessionStartTimeout) << path;
    EXPECT_EQ(config->maxMessageBytes, defaults.maxMessageBytes) << path;
    EXPECT_EQ(config->maxPayloadBytes, defaults.maxPayloadBytes) << path;
    EXPECT_EQ(config->shmInlinePayloadBytes, defaults.shmInlinePayloadBytes) << path;
    EXPECT_EQ(config->regionSlotBytes, defaults.regionSlotBytes) << path;
    EXPECT_EQ(config->regionSlots, defaults.regionSlots) << path;
  }
}

TEST(TransportConfig, SyntaxErrorNamesFileLineAndColumn) {
  const std::string path = ::testing::TempDir() + "/broken.toml";
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("[transport]\npeer_timeout_ms = = 3\n", f);
  std::fclose(f);
  auto table = flyt::transport::loadTomlFile(path);
  ASSERT_FALSE(table);
  EXPECT_NE(table.error().message.find(path + ":2:"), std::string::npos) << table.error().message;
}

TEST(TransportConfig, ClientCopyKeysParseAndAreBounded) {
  auto table = toml::parse("[transport]\ncopy_threads = 8\nreply_spin_us = 0\n");
  auto config = flyt::transport::transportConfigFromToml(table, "client.toml");
  ASSERT_TRUE(config) << config.error().describe();
  EXPECT_EQ(config->copyThreads, 8U);
  EXPECT_EQ(config->replySpin.count(), 0);
  auto none = toml::parse("[transport]\ncopy_threads = 0\n");
  auto refused = flyt::transport::transportConfigFromToml(none, "client.toml");
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("copy_threads"), std::string::npos);
}

TEST(ClusterClientConfig, ShippedClientTomlMeansStandaloneAndTheEnvironmentOverridesIt) {
  const std::string path = std::string(FLYT_CONFIG_DIR) + "/client.toml";
  auto table = flyt::transport::loadTomlFile(path);
  ASSERT_TRUE(table) << table.error().describe();
  ::unsetenv("FLYT_ORCHESTRATOR");
  ::unsetenv("FLYT_TENANT");
  ::unsetenv("FLYT_TOKEN");
  auto config = flyt::transport::clusterClientConfig(&*table, path);
  ASSERT_TRUE(config) << config.error().describe();
  EXPECT_FALSE(config->enabled());

  ::setenv("FLYT_ORCHESTRATOR", "ctl1", 1);
  auto noTenant = flyt::transport::clusterClientConfig(&*table, path);
  ASSERT_FALSE(noTenant);
  EXPECT_NE(noTenant.error().message.find("tenant"), std::string::npos);
  ::setenv("FLYT_TENANT", "vm-a", 1);
  auto clustered = flyt::transport::clusterClientConfig(&*table, path);
  ASSERT_TRUE(clustered) << clustered.error().describe();
  EXPECT_TRUE(clustered->enabled());
  EXPECT_EQ(clustered->tenant, "vm-a");
  EXPECT_EQ(*flyt::transport::orchestratorAddress(clustered->orchestrator), "ctl1:7000");
  ::unsetenv("FLYT_ORCHESTRATOR");
  ::unsetenv("FLYT_TENANT");
}

TEST(ClusterClientConfig, UnknownKeysAndWrongTypesNameFileLineAndKey) {
  auto table = toml::parse("[cluster]\ntenant = 'a'\ntennant = 'b'\n");
  auto refused = flyt::transport::clusterClientConfig(&table, "client.toml");
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("client.toml:3"), std::string::npos) << refused.error().message;
  EXPECT_NE(refused.error().message.find("cluster.tennant"), std::string::npos);
  auto typed = toml::parse("[cluster]\ntoken = 5\n");
  auto wrongType = flyt::transport::clusterClientConfig(&typed, "client.toml");
  ASSERT_FALSE(wrongType);
  EXPECT_NE(wrongType.error().message.find("cluster.token must be a string"), std::string::npos);
}

TEST(TransportConfig, ReadsTheAuthTokenFromAFileOnlyItsOwnerMayRead) {
  const std::string path = "/tmp/flyt-config-test-token-" + std::to_string(::getpid());
  {
    std::FILE* file = std::fopen(path.c_str(), "w");
    ASSERT_NE(file, nullptr);
    std::fputs("a-token-from-a-file-0123456789\n", file);
    std::fclose(file);
  }
  ::chmod(path.c_str(), 0644);
  auto shared = flyt::transport::readAuthTokenFile(path);
  ASSERT_FALSE(shared);
  EXPECT_NE(shared.error().message.find("chmod 600"), std::string::npos) << shared.error().message;
  ::chmod(path.c_str(), 0600);
  auto table = toml::parse(fmt::format("[transport]\nauth_token_file = \"{}\"\n", path));
  auto config = flyt::transport::transportConfigFromToml(table, "x.toml");
  ::unlink(path.c_str());
  ASSERT_TRUE(config) << config.error().describe();
  EXPECT_EQ(config->authToken, "a-token-from-a-file-0123456789");
}

TEST(TransportConfig, RefusesAShortAuthTokenAndTakesOneFromTheEnvironment) {
  auto table = toml::parse("[transport]\nauth_token = \"short\"\n");
  auto config = flyt::transport::transportConfigFromToml(table, "x.toml");
  ASSERT_FALSE(config);
  EXPECT_NE(config.error().message.find("transport.auth_token"), std::string::npos) << config.error().message;
  ::setenv("FLYT_AUTH_TOKEN", "an-environment-token-0123456789", 1);
  auto fromEnv = flyt::transport::transportConfigFromEnv();
  ::unsetenv("FLYT_AUTH_TOKEN");
  ASSERT_TRUE(fromEnv) << fromEnv.error().describe();
  EXPECT_EQ(fromEnv->authToken, "an-environment-token-0123456789");
}
