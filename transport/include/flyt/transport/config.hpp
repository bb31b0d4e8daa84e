// Configuration read by the transport layer: the `[transport]` table of node.toml / client.toml,
// then environment overrides (FLYT_*). Every key is declared once, in kTransportKeys (config.cpp),
// which drives TOML parsing, environment overrides and the documentation printed by
// `describeTransportKeys()`; README.md lists the same table.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "flyt/transport/error.hpp"

#include <toml++/toml.h>

namespace flyt::transport {

// Shortest auth_token accepted, bytes (`openssl rand -hex 32` makes a good one).
inline constexpr std::size_t kMinAuthTokenBytes = 16;

struct TransportConfig {
  // A dead or silent peer is reported within this bound (receive of an expected reply, handshake).
  std::chrono::milliseconds peerTimeout{2000};
  // How long connect() waits for the server (TCP connect + handshake, shm service discovery). A
  // server that is not there fails at once (connection refused); this bounds a busy or stalled one:
  // 128 sessions starting at once on a 2-core host took longer than 2 s to be set up.
  std::chrono::milliseconds connectTimeout{10000};
  // The handshake with the session's worker, after the node's redirect: the worker creates its CUDA
  // context before it answers, which took over 2 s for 16 sessions starting at once on an H200.
  std::chrono::milliseconds sessionStartTimeout{30000};
  // Largest Cap'n Proto message accepted in one frame, bytes.
  std::uint64_t maxMessageBytes = 64ULL << 20;
  // Largest inline payload accepted after one TCP frame, bytes.
  std::uint64_t maxPayloadBytes = 4ULL << 30;
  // Largest payload carried inside an iceoryx chunk on shm; larger data goes through the region.
  std::uint64_t shmInlinePayloadBytes = 1ULL << 20;
  // Concurrent shared-memory sessions a host's RouDi sizes its chunk pools for (read by the process
  // that starts RouDi, flyt-node), and the most a node serves at once (it refuses the next one with a
  // message that says so). Each session may hold a bounded number of chunks of each size (see
  // shmChunkClasses), so up to this many sessions never wait for one another's chunks.
  std::uint32_t shmSessions = 64;
  // Data region: bytes per staging slot and number of slots in the ring.
  std::uint64_t regionSlotBytes = 8ULL << 20;
  std::uint32_t regionSlots = 8;
  // Client: threads (the caller included) that fill and drain staging slots for large copies from
  // and to pageable memory. Default: 4 on hosts with 8 or more CPUs, else 1.
  std::uint32_t copyThreads = manyCpus() ? 4 : 1;
  // Client: how long it busy-polls for a reply before sleeping. NVIDIA's runtime busy-waits in
  // synchronous calls too (cudaDeviceScheduleAuto on a host with more cores than GPUs); the wake-up
  // it saves costs tens to hundreds of microseconds on virtual machines. Default: 20 ms on hosts
  // with 8 or more CPUs; 50 us on smaller ones, where a spinning client takes the worker's CPU.
  std::chrono::microseconds replySpin{manyCpus() ? 20000 : 50};
  // Shared secret of TCP authentication (see handshake.hpp); empty: none. A server with one
  // admits a TCP client only after it proved it holds the same secret; a client with one talks only
  // to a server that proved the same. Never sent over the wire. Set by auth_token or read from
  // auth_token_file (a file only its owner may read); at least kMinAuthTokenBytes long.
  std::string authToken;

  // 8 or more CPUs online: room for a client to spin and copy on several threads beside the worker.
  [[nodiscard]] static bool manyCpus();
};

// Parses a TOML file. Syntax errors name the file, line and column.
[[nodiscard]] Result<toml::table> loadTomlFile(const std::string& path);

// Reads the `[transport]` table (absent keys keep their defaults). Unknown keys and wrong types are
// errors naming `sourceName` (usually the file path), the line and the key.
[[nodiscard]] Result<TransportConfig> transportConfigFromToml(const toml::table& root,
                                                              std::string_view sourceName);

// Applies FLYT_* environment overrides on top of `config`. A malformed value is an error naming the
// variable.
[[nodiscard]] Result<TransportConfig> applyTransportEnv(TransportConfig config);

// Defaults + environment: what a process uses when it has no file.
[[nodiscard]] Result<TransportConfig> transportConfigFromEnv();

// Reads an auth_token_file: a regular file owned by this user that no one else may read or write
// (mode 0600 or 0400). Surrounding white space is dropped. The error names the file and the problem.
[[nodiscard]] Result<std::string> readAuthTokenFile(const std::string& path);

// One line per key: "transport.peer_timeout_ms (FLYT_PEER_TIMEOUT_MS, default 2000): ...".
[[nodiscard]] std::string describeTransportKeys();

}  // namespace flyt::transport
