#include "node_config.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include <array>

namespace flyt::backend {
namespace {

using transport::Errc;
using transport::fail;

constexpr std::array<std::string_view, 3> kNodeKeys = {"shm_name", "tcp", "executor"};

std::string where(std::string_view source, const toml::node& node) {
  return fmt::format("{}:{}", source, node.source().begin.line);
}

transport::Result<std::string> stringValue(const toml::node& value, std::string_view key,
                                           std::string_view source) {
  if (auto text = value.value<std::string>(); value.is_string() && text) return *text;
  return fail(Errc::kInvalidArgument,
              fmt::format("{}: node.{} must be a string", where(source, value), key));
}

transport::Result<void> applyKey(NodeConfig& config, std::string_view key, const toml::node& value,
                                 std::string_view source) {
  auto text = stringValue(value, key, source);
  if (!text) return std::unexpected(text.error());
  auto located = [&](const transport::Error& e) {
    return fail(e.code, fmt::format("{}: node.{}: {}", where(source, value), key, e.message));
  };
  if (key == "shm_name") {
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
