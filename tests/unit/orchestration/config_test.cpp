// orchestrator.toml: the shipped file is the defaults; mistakes name the file, line and key.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

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

namespace {

// A token file of this user with `mode`; removed by the destructor.
struct TokenFile {
  std::string path;
  TokenFile(const std::string& secret, mode_t mode) {
    char pattern[] = "/tmp/flyt-orchestrator-token-XXXXXX";
    const int fd = ::mkstemp(pattern);
    path = pattern;
    EXPECT_EQ(::write(fd, secret.data(), secret.size()), ssize_t(secret.size()));
    ::close(fd);
    ::chmod(path.c_str(), mode);
  }
  ~TokenFile() { ::unlink(path.c_str()); }
};

}  // namespace

TEST(OrchestratorConfig, ReadsTheRoleTokensFromTheFileOrTheirFiles) {
  auto inline_ = parse("[orchestrator]\nadmin_token = \"admin-0123456789abcdef\"\nnode_token = \"node-0123456789abcdef\"\n");
  ASSERT_TRUE(inline_) << inline_.error().message;
  EXPECT_EQ(inline_->adminToken, "admin-0123456789abcdef");
  EXPECT_EQ(inline_->nodeToken, "node-0123456789abcdef");

  TokenFile admin("from-a-file-0123456789\n", 0600);
  auto fromFile = parse(fmt::format("[orchestrator]\nadmin_token_file = \"{}\"\n", admin.path));
  ASSERT_TRUE(fromFile) << fromFile.error().message;
  EXPECT_EQ(fromFile->adminToken, "from-a-file-0123456789");
  EXPECT_TRUE(fromFile->nodeToken.empty());
  EXPECT_TRUE(fo::OrchestratorConfig{}.adminToken.empty());  // no token by default: today's behaviour
}

TEST(OrchestratorConfig, ShortTokensAndFilesOthersMayReadAreRefused) {
  auto tooShort = parse("[orchestrator]\n\nadmin_token = \"short\"\n");
  ASSERT_FALSE(tooShort);
  EXPECT_EQ(tooShort.error().message,
            "test.toml:3: orchestrator.admin_token is 5 bytes; it must have at least 16 (e.g. `openssl rand -hex 32`)");
  TokenFile open("node-0123456789abcdef", 0644);
  auto readable = parse(fmt::format("[orchestrator]\nnode_token_file = \"{}\"\n", open.path));
  ASSERT_FALSE(readable);
  EXPECT_EQ(readable.error().message, fmt::format("test.toml:2: orchestrator.node_token_file: '{}' has mode 0644: "
                                                  "others may read it; chmod 600 it",
                                                  open.path));
  auto missing = parse("[orchestrator]\nnode_token_file = \"/nonexistent/flyt-token\"\n");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.error().message.find("node_token_file: '/nonexistent/flyt-token': No such file"), std::string::npos)
      << missing.error().message;
}

TEST(OrchestratorConfig, EnvironmentOverridesTheTokens) {
  TokenFile node("node-from-env-file-0123456789", 0600);
  ::setenv("FLYT_ADMIN_TOKEN", "admin-from-env-0123456789", 1);
  ::setenv("FLYT_NODE_TOKEN", "node-from-env-0123456789", 1);
  ::setenv("FLYT_NODE_TOKEN_FILE", node.path.c_str(), 1);
  auto config = fo::applyOrchestratorEnv(*parse("[orchestrator]\nadmin_token = \"admin-from-file-0123456789\"\n"));
  ::setenv("FLYT_ADMIN_TOKEN", "short", 1);
  auto bad = fo::applyOrchestratorEnv({});
  ::unsetenv("FLYT_ADMIN_TOKEN");
  ::unsetenv("FLYT_NODE_TOKEN");
  ::unsetenv("FLYT_NODE_TOKEN_FILE");
  ASSERT_TRUE(config) << config.error().message;
  EXPECT_EQ(config->adminToken, "admin-from-env-0123456789");
  EXPECT_EQ(config->nodeToken, "node-from-env-file-0123456789");  // the file wins over the plain variable
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().message,
            "FLYT_ADMIN_TOKEN: admin_token is 5 bytes; it must have at least 16 (e.g. `openssl rand -hex 32`)");
}
