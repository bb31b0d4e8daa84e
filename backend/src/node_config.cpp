#include "node_config.hpp"

#include "flyt/transport/orchestrator_auth.hpp"
#include "flyt/transport/orchestrator_client.hpp"
#include "flyt/transport/units.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <utility>

#include <array>

namespace flyt::backend {
namespace {

using transport::Errc;
using transport::fail;

constexpr std::array<std::string_view, 11> kNodeKeys = {
    "shm_name",           "tcp",          "executor", "session_memory_limit", "session_sm_percent",
    "session_idle_timeout_s", "orchestrator", "orchestrator_token_file", "name", "advertise", "mps"};

std::string where(std::string_view source, const toml::node& node) {
  return fmt::format("{}:{}", source, node.source().begin.line);
}

transport::Result<std::string> stringValue(const toml::node& value, std::string_view key,
                                           std::string_view source) {
  if (auto text = value.value<std::string>(); value.is_string() && text) return *text;
  return fail(Errc::kInvalidArgument,
              fmt::format("{}: node.{} must be a string", where(source, value), key));
}

// session_*: integers (the memory limit also as a string with a unit).
transport::Result<void> applyLimitKey(SessionLimits& limits, std::string_view key, const toml::node& value,
                                      std::string_view source) {
  auto located = [&](std::string message) {
    return fail(Errc::kInvalidArgument, fmt::format("{}: node.{}: {}", where(source, value), key, message));
  };
  const auto number = value.value<std::int64_t>();
  if (key == "session_memory_limit") {
    if (value.is_string()) {
      auto bytes = transport::parseSize(*value.value<std::string>());
      if (!bytes) return located(bytes.error().message);
      limits.memoryBytes = *bytes;
      return {};
    }
    if (!value.is_integer() || *number < 0) return located("must be a byte count (integer >= 0, or \"8GiB\")");
    limits.memoryBytes = static_cast<std::uint64_t>(*number);
  } else if (key == "session_sm_percent") {
    if (!value.is_integer()) return located("must be an integer percentage");
    auto percent = checkSmPercent(*number);
    if (!percent) return located(percent.error().message);
    limits.smPercent = *percent;
  } else {
    if (!value.is_integer() || *number < 0 || *number > UINT32_MAX) return located("must be seconds (integer >= 0)");
    limits.idleTimeoutS = static_cast<std::uint32_t>(*number);
  }
  return {};
}

transport::Result<void> applyKey(NodeConfig& config, std::string_view key, const toml::node& value,
                                 std::string_view source) {
  if (key.starts_with("session_")) return applyLimitKey(config.sessionLimits, key, value, source);
  auto text = stringValue(value, key, source);
  if (!text) return std::unexpected(text.error());
  auto located = [&](const transport::Error& e) {
    return fail(e.code, fmt::format("{}: node.{}: {}", where(source, value), key, e.message));
  };
  if (key == "orchestrator" || key == "advertise") {
    if (!text->empty()) {
      auto address = transport::orchestratorAddress(*text);  // HOST[:PORT], as both are
      if (!address) return located(address.error());
    }
    (key == "orchestrator" ? config.orchestrator : config.advertise) = *text;
  } else if (key == "orchestrator_token_file") {
    auto token = transport::readOrchestratorSecret(*text, "orchestrator_token_file");
    if (!token) return fail(token.error().code, fmt::format("{}: node.{}", where(source, value), token.error().message));
    config.orchestratorToken = std::move(*token);
  } else if (key == "name") {
    if (auto ok = checkNodeName(*text); !ok) return located(ok.error());
    config.name = *text;
  } else if (key == "mps") {
    if (*text != "auto" && *text != "off" && *text != "manage") {
      return located(transport::Error{Errc::kInvalidArgument,
                                      fmt::format("'{}' is not auto, off or manage", *text)});
    }
    config.mps = *text;
  } else if (key == "shm_name") {
    if (auto ok = checkNodeShmName(*text); !ok) return located(ok.error());
    config.shmName = *text;
  } else if (key == "tcp") {
    auto tcp = parseTcpOption(*text);
    if (!tcp) return located(tcp.error());
    config.tcp = *tcp;
  } else {
    auto executor = parseExecutor(*text);
    if (!executor) return located(executor.error());
    config.executor = *executor;
  }
  return {};
}

}  // namespace

transport::Result<std::uint32_t> checkSmPercent(std::int64_t percent) {
  if (percent < 0 || percent > 100) {
    return fail(Errc::kInvalidArgument, fmt::format("an SM share of {} % is not in 0..100", percent));
  }
  return static_cast<std::uint32_t>(percent);
}

transport::Result<ExecutorKind> parseExecutor(std::string_view text) {
  if (text == "auto") return ExecutorKind::kAuto;
  if (text == "cuda") return ExecutorKind::kCuda;
  if (text == "standin") return ExecutorKind::kStandIn;
  return fail(Errc::kInvalidArgument,
              fmt::format("unknown executor '{}' (expected auto, cuda or standin)", text));
}

std::string_view executorName(ExecutorKind kind) noexcept {
  switch (kind) {
    case ExecutorKind::kCuda: return "cuda";
    case ExecutorKind::kStandIn: return "standin";
    case ExecutorKind::kAuto: break;
  }
  return "auto";
}

transport::Result<std::optional<transport::Endpoint>> parseTcpOption(std::string_view text) {
  if (text == "none") return std::optional<transport::Endpoint>{};
  std::string url(text);
  if (!url.starts_with("tcp://")) url = "tcp://" + url;
  auto endpoint = transport::Endpoint::parse(url);
  if (!endpoint) return std::unexpected(endpoint.error());
  if (endpoint->kind != transport::Endpoint::Kind::kTcp) {
    return fail(Errc::kInvalidArgument, fmt::format("'{}' is not a TCP address", text));
  }
  return std::optional<transport::Endpoint>(*endpoint);
}

transport::Result<NodeConfig> applyNodeEnv(NodeConfig config) {
  if (const char* token = std::getenv("FLYT_NODE_TOKEN"); token != nullptr && *token != '\0') {
    if (auto ok = transport::checkOrchestratorSecret(token, "FLYT_NODE_TOKEN"); !ok) return std::unexpected(ok.error());
    config.orchestratorToken = token;
  }
  if (const char* file = std::getenv("FLYT_NODE_TOKEN_FILE"); file != nullptr && *file != '\0') {
    auto token = transport::readOrchestratorSecret(file, "FLYT_NODE_TOKEN_FILE");
    if (!token) return std::unexpected(token.error());
    config.orchestratorToken = std::move(*token);
  }
  return config;
}

transport::Result<void> checkNodeName(std::string_view name) {
  const bool ok = !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
  if (!ok) {
    return fail(Errc::kInvalidArgument,
                fmt::format("node name '{}' must be 1-64 characters of A-Z a-z 0-9 . _ -", name));
  }
  return {};
}

transport::Result<void> checkNodeShmName(std::string_view name) {
  auto endpoint = transport::Endpoint::parse(fmt::format("shm://{}", name));
  if (!endpoint) return std::unexpected(endpoint.error());
  if (name.size() > kMaxNodeShmNameLength) {
    return fail(Errc::kInvalidArgument,
                fmt::format("shm name '{}' is longer than {} characters (workers append -w<id>)",
                            name, kMaxNodeShmNameLength));
  }
  return {};
}

transport::Result<NodeConfig> nodeConfigFromToml(const toml::table& root, std::string_view sourceName,
                                                 NodeConfig config) {
  const toml::node* node = root.get("node");
  if (node == nullptr) return config;
  const toml::table* table = node->as_table();
  if (table == nullptr) {
    return fail(Errc::kInvalidArgument,
                fmt::format("{}: 'node' must be a table", where(sourceName, *node)));
  }
  for (const auto& [name, value] : *table) {
    const std::string_view key = name.str();
    if (std::find(kNodeKeys.begin(), kNodeKeys.end(), key) == kNodeKeys.end()) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("{}: unknown key 'node.{}' (known keys: {})", where(sourceName, value),
                              key, fmt::join(kNodeKeys, ", ")));
    }
    if (auto ok = applyKey(config, key, value, sourceName); !ok) return std::unexpected(ok.error());
  }
  return config;
}

}  // namespace flyt::backend
