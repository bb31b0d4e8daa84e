// What a flyt-node serves and how it starts workers: the `[node]` table of node.toml, overridden by
// the command line. Private to backend/ (flyt-node, flyt-worker and their tests).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <toml++/toml.h>

#include "flyt/backend/session_handler.hpp"
#include "flyt/backend/session_limits.hpp"
#include "flyt/transport/config.hpp"
#include "flyt/transport/endpoint.hpp"

namespace flyt::backend {

// Longest node shm name: a worker's endpoint appends "-w" and 16 hex digits, and an shm endpoint
// name is at most 64 characters.
inline constexpr std::size_t kMaxNodeShmNameLength = 64 - 18;

struct NodeConfig {
  // shm://<shmName> is always served; workers of shm sessions listen on shm://<shmName>-w<id hex>.
  std::string shmName = "flyt";
  // tcp://host:port, or none. Loopback only by default: a node is reachable from other hosts only
  // when asked to be.
  std::optional<transport::Endpoint> tcp =
      transport::Endpoint{transport::Endpoint::Kind::kTcp, "127.0.0.1", 7070, {}};
  // Executor the workers run sessions on (see ExecutorKind).
  ExecutorKind executor = ExecutorKind::kAuto;
  // Standalone mode limits: applied to every session of this node (keys session_memory_limit,
  // session_sm_percent, session_idle_timeout_s; options --session-*). Only memoryBytes, smPercent
  // and idleTimeoutS are read from the file. Defaults: the whole GPU, no idle timeout.
  SessionLimits sessionLimits;
  // Cluster mode: flyt-orchestrator's address ("HOST:PORT"); empty: standalone (every session is
  // admitted, with sessionLimits). With an orchestrator, only sessions it granted are admitted.
  std::string orchestrator;
  // The secret proving to the orchestrator that this is one of its nodes (its node_token; see
  // transport/orchestrator_auth.hpp); empty: none. Read from orchestrator_token_file, or
  // FLYT_NODE_TOKEN_FILE / FLYT_NODE_TOKEN (applyNodeEnv). Never logged.
  std::string orchestratorToken;
  // The node's name in the cluster (default: the host name).
  std::string name;
  // The TCP address clients on other hosts are told ("HOST:PORT"); default: the tcp address, with
  // the host name in place of a wildcard (0.0.0.0, ::).
  std::string advertise;
  // SM shares: "auto" (MPS when its control daemon runs, else green contexts), "off" (green
  // contexts), "manage" (flyt-node starts the MPS control daemon and stops it when it stops).
  std::string mps = "auto";
};


// A session's SM share: 0..100 (0 and 100: the whole GPU).
[[nodiscard]] transport::Result<std::uint32_t> checkSmPercent(std::int64_t percent);

// "auto", "cuda", "standin" <-> ExecutorKind.
[[nodiscard]] transport::Result<ExecutorKind> parseExecutor(std::string_view text);
[[nodiscard]] std::string_view executorName(ExecutorKind kind) noexcept;

// "HOST:PORT" or "tcp://HOST:PORT" -> a TCP endpoint; "none" -> nullopt.
[[nodiscard]] transport::Result<std::optional<transport::Endpoint>> parseTcpOption(std::string_view text);

// Reads the `[node]` table (keys shm_name, tcp, executor, session_memory_limit (bytes as an integer,
// or a string transport::parseSize takes: "8GiB"), session_sm_percent, session_idle_timeout_s,
// orchestrator, orchestrator_token_file (read here: mode 0600), name, advertise, mps; absent keys
// keep the defaults in `config`). Unknown keys and wrong types are errors naming `sourceName`, the line and the key.
[[nodiscard]] transport::Result<NodeConfig> nodeConfigFromToml(const toml::table& root,
                                                               std::string_view sourceName,
                                                               NodeConfig config = {});

// Applies FLYT_NODE_TOKEN and FLYT_NODE_TOKEN_FILE (which wins) on top of `config`: the
// orchestrator's node token. A malformed value is an error naming the variable.
[[nodiscard]] transport::Result<NodeConfig> applyNodeEnv(NodeConfig config);

// Checks a node name: 1-64 of [A-Za-z0-9._-].
[[nodiscard]] transport::Result<void> checkNodeName(std::string_view name);

// Checks a node shm name: a valid endpoint name, short enough for the workers' names.
[[nodiscard]] transport::Result<void> checkNodeShmName(std::string_view name);

}  // namespace flyt::backend
