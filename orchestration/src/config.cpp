#include "flyt/orchestration/config.hpp"

#include <fmt/format.h>

#include <array>
#include <cstdlib>
#include <functional>

#include "flyt/transport/orchestrator_auth.hpp"

namespace flyt::orchestration {
namespace {

using transport::Errc;
using transport::fail;

struct IntegerKey {
  std::string_view name;
  std::int64_t min;
  std::int64_t max;
  std::uint32_t OrchestratorConfig::*field;
};

constexpr std::array<IntegerKey, 5> kIntegerKeys = {{
    {"heartbeat_ms", 50, 60'000, &OrchestratorConfig::heartbeatMs},
    {"node_timeout_ms", 100, 3'600'000, &OrchestratorConfig::nodeTimeoutMs},
    {"grant_ttl_ms", 100, 3'600'000, &OrchestratorConfig::grantTtlMs},
    {"session_overhead_mib", 0, 1 << 20, &OrchestratorConfig::sessionOverheadMib},
    {"session_idle_timeout_s", 0, 30 * 86'400, &OrchestratorConfig::sessionIdleTimeoutS},
}};
constexpr std::array<std::string_view, 3> kStringKeys = {"listen", "database", "placement"};

// The connection preamble's secrets: each key, its environment variable, where it lands, and
// whether the value is a file holding the secret (mode 0600) rather than the secret itself.
struct TokenKey {
  std::string_view name;
  const char* env;
  std::string OrchestratorConfig::*field;
  bool file;
};

// In the order they apply: a file wins over the plain key of the same role.
constexpr std::array<TokenKey, 4> kTokenKeys = {{
    {"admin_token", "FLYT_ADMIN_TOKEN", &OrchestratorConfig::adminToken, false},
    {"admin_token_file", "FLYT_ADMIN_TOKEN_FILE", &OrchestratorConfig::adminToken, true},
    {"node_token", "FLYT_NODE_TOKEN", &OrchestratorConfig::nodeToken, false},
    {"node_token_file", "FLYT_NODE_TOKEN_FILE", &OrchestratorConfig::nodeToken, true},
}};

transport::Result<void> applyToken(OrchestratorConfig& config, const TokenKey& key, const std::string& value) {
  if (!key.file) {
    if (auto ok = transport::checkOrchestratorSecret(value, key.name); !ok) return ok;
    config.*key.field = value;
    return {};
  }
  auto secret = transport::readOrchestratorSecret(value, key.name);
  if (!secret) return std::unexpected(secret.error());
  config.*key.field = std::move(*secret);
  return {};
}
constexpr std::array<std::string_view, 7> kLogLevels = {"trace", "debug", "info", "warn",
                                                       "error", "critical", "off"};

std::string where(std::string_view source, const toml::node& node) {
  return fmt::format("{}:{}", source, node.source().begin.line);
}

std::string knownKeys() {
  std::string known;
  for (const auto& key : kStringKeys) known += fmt::format("{}{}", known.empty() ? "" : ", ", key);
  for (const auto& key : kIntegerKeys) known += fmt::format(", {}", key.name);
  for (const auto& key : kTokenKeys) known += fmt::format(", {}", key.name);
  return known;
}

transport::Result<void> applyString(OrchestratorConfig& config, std::string_view key, const toml::node& value,
                                    std::string_view source) {
  auto text = value.value<std::string>();
  if (!value.is_string() || !text) {
    return fail(Errc::kInvalidArgument, fmt::format("{}: orchestrator.{} must be a string", where(source, value), key));
  }
  if (key == "listen") {
    config.listen = *text;
  } else if (key == "database") {
    if (text->empty()) {
      return fail(Errc::kInvalidArgument, fmt::format("{}: orchestrator.database must not be empty", where(source, value)));
    }
    config.database = *text;
  } else {
    auto policy = parsePlacement(*text);
    if (!policy) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("{}: orchestrator.placement: {}", where(source, value), policy.error().message));
    }
    config.placement = *policy;
  }
  return {};
}

transport::Result<void> applyKey(OrchestratorConfig& config, std::string_view key, const toml::node& value,
                                 std::string_view source) {
  for (const auto& integer : kIntegerKeys) {
    if (integer.name != key) continue;
    auto number = value.value<std::int64_t>();
    if (!value.is_integer() || !number) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("{}: orchestrator.{} must be an integer", where(source, value), key));
    }
    if (*number < integer.min || *number > integer.max) {
      return fail(Errc::kInvalidArgument, fmt::format("{}: orchestrator.{} = {} is outside [{}, {}]",
                                                      where(source, value), key, *number, integer.min, integer.max));
    }
    config.*integer.field = std::uint32_t(*number);
    return {};
  }
  for (const auto& name : kStringKeys) {
    if (name == key) return applyString(config, key, value, source);
  }
  for (const auto& token : kTokenKeys) {
    if (token.name != key) continue;
    auto text = value.value<std::string>();
    if (!value.is_string() || !text) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("{}: orchestrator.{} must be a string", where(source, value), key));
    }
    if (auto ok = applyToken(config, token, *text); !ok) {
      return fail(ok.error().code, fmt::format("{}: orchestrator.{}", where(source, value), ok.error().message));
    }
    return {};
  }
  return fail(Errc::kInvalidArgument, fmt::format("{}: unknown key 'orchestrator.{}' (known keys: {})",
                                                  where(source, value), key, knownKeys()));
}

transport::Result<void> applyLog(OrchestratorConfig& config, const toml::table& table, std::string_view source) {
  for (const auto& [name, value] : table) {
    if (name.str() != "level") {
      return fail(Errc::kInvalidArgument,
                  fmt::format("{}: unknown key 'log.{}' (known keys: level)", where(source, value), name.str()));
    }
    auto text = value.value<std::string>();
    bool known = false;
    for (const auto& level : kLogLevels) known = known || (text && *text == level);
    if (!value.is_string() || !known) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("{}: log.level must be one of trace, debug, info, warn, error, critical, off",
                              where(source, value)));
    }
    config.logLevel = *text;
  }
  return {};
}

}  // namespace

std::string_view placementName(PlacementPolicy policy) noexcept {
  return policy == PlacementPolicy::kSpread ? "spread" : "best-fit";
}

transport::Result<PlacementPolicy> parsePlacement(std::string_view text) {
  if (text == "best-fit") return PlacementPolicy::kBestFit;
  if (text == "spread") return PlacementPolicy::kSpread;
  return fail(Errc::kInvalidArgument, fmt::format("unknown placement '{}' (expected best-fit or spread)", text));
}

std::string defaultDatabasePath() {
  // The one place the orchestrator reads the environment for a path (XDG base directories).
  if (const char* state = std::getenv("XDG_STATE_HOME"); state != nullptr && *state == '/') {
    return fmt::format("{}/flyt/orchestrator.db", state);
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home == '/') {
    return fmt::format("{}/.local/state/flyt/orchestrator.db", home);
  }
  return "orchestrator.db";
}

transport::Result<OrchestratorConfig> orchestratorConfigFromToml(const toml::table& root, std::string_view sourceName,
                                                                 OrchestratorConfig config) {
  for (const auto& [name, node] : root) {
    const toml::table* table = node.as_table();
    if (name.str() != "orchestrator" && name.str() != "log") {
      return fail(Errc::kInvalidArgument, fmt::format("{}: unknown table '{}' (known tables: orchestrator, log)",
                                                      where(sourceName, node), name.str()));
    }
    if (table == nullptr) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("{}: '{}' must be a table", where(sourceName, node), name.str()));
    }
    if (name.str() == "log") {
      if (auto ok = applyLog(config, *table, sourceName); !ok) return std::unexpected(ok.error());
      continue;
    }
    for (const auto& [key, value] : *table) {
      if (auto ok = applyKey(config, key.str(), value, sourceName); !ok) return std::unexpected(ok.error());
    }
  }
  return config;
}

transport::Result<OrchestratorConfig> applyOrchestratorEnv(OrchestratorConfig config) {
  for (const auto& key : kTokenKeys) {
    const char* value = std::getenv(key.env);
    if (value == nullptr || *value == '\0') continue;
    if (auto ok = applyToken(config, key, value); !ok) {
      return fail(ok.error().code, fmt::format("{}: {}", key.env, ok.error().message));
    }
  }
  return config;
}

transport::Result<void> checkConfig(const OrchestratorConfig& config) {
  if (config.nodeTimeoutMs <= config.heartbeatMs) {
    return fail(Errc::kInvalidArgument,
                fmt::format("node_timeout_ms ({}) must be larger than heartbeat_ms ({}): a node would be "
                            "declared down between two heartbeats",
                            config.nodeTimeoutMs, config.heartbeatMs));
  }
  const auto colon = config.listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == config.listen.size()) {
    return fail(Errc::kInvalidArgument,
                fmt::format("listen address '{}' has no port (expected HOST:PORT, e.g. 127.0.0.1:7000)", config.listen));
  }
  return {};
}

}  // namespace flyt::orchestration
