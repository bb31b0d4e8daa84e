// flyt-orchestrator's configuration: the [orchestrator] and [log] tables of orchestrator.toml
// (configs/orchestrator.toml documents every key and its default), then command-line overrides
// applied by main(). Parsed once into OrchestratorConfig.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <toml++/toml.h>

#include "flyt/transport/error.hpp"

namespace flyt::orchestration {

enum class PlacementPolicy : std::uint8_t {
  kBestFit,  // the GPU left with the least free SM share, then least free memory: packs GPUs
  kSpread,   // the GPU left with the most free SM share, then most free memory: spreads sessions
};

[[nodiscard]] std::string_view placementName(PlacementPolicy policy) noexcept;
[[nodiscard]] transport::Result<PlacementPolicy> parsePlacement(std::string_view text);

struct OrchestratorConfig {
  std::string listen = "127.0.0.1:7000";  // HOST:PORT (port 0: any free port); loopback by default
  std::string database;                   // SQLite file; empty: defaultDatabasePath()
  PlacementPolicy placement = PlacementPolicy::kBestFit;
  std::uint32_t heartbeatMs = 1000;        // told to nodes when they register
  std::uint32_t nodeTimeoutMs = 5000;      // a node silent this long is down; its sessions end
  std::uint32_t grantTtlMs = 30000;        // a grant must be used (Hello to the node) within this
  std::uint32_t sessionOverheadMib = 512;  // device memory a session's CUDA context takes itself
  std::uint32_t sessionIdleTimeoutS = 0;   // written into grants; 0: sessions never idle out
  std::string logLevel = "info";
  // Secrets of the connection preamble (transport/orchestrator_auth.hpp), by role; empty: that role
  // needs none. Keys admin_token / admin_token_file and node_token / node_token_file, or the
  // environment (applyOrchestratorEnv); at least transport::kMinAuthTokenBytes. Never logged.
  std::string adminToken;
  std::string nodeToken;

  [[nodiscard]] std::uint64_t sessionOverheadBytes() const { return std::uint64_t(sessionOverheadMib) << 20; }
};

// $XDG_STATE_HOME/flyt/orchestrator.db, else $HOME/.local/state/flyt/orchestrator.db, else
// ./orchestrator.db: a place a non-root user may write.
[[nodiscard]] std::string defaultDatabasePath();

// Reads [orchestrator] and [log] on top of `config`. Unknown tables or keys, wrong types and values
// out of range are errors naming `sourceName` (the file), the line and the key.
[[nodiscard]] transport::Result<OrchestratorConfig> orchestratorConfigFromToml(
    const toml::table& root, std::string_view sourceName, OrchestratorConfig config = {});

// Applies FLYT_ADMIN_TOKEN, FLYT_ADMIN_TOKEN_FILE, FLYT_NODE_TOKEN and FLYT_NODE_TOKEN_FILE on top of
// `config` (a *_FILE variable wins over its plain one). A malformed value is an error naming the
// variable.
[[nodiscard]] transport::Result<OrchestratorConfig> applyOrchestratorEnv(OrchestratorConfig config);

// Cross-key checks (node_timeout_ms above heartbeat_ms, a listen address with a port).
[[nodiscard]] transport::Result<void> checkConfig(const OrchestratorConfig& config);

}  // namespace flyt::orchestration
