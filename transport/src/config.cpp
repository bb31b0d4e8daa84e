#include "flyt/transport/config.hpp"

#include <toml++/toml.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <cstdlib>
#include <fmt/format.h>
#include <functional>
#include <span>
#include <thread>
#include <vector>

namespace flyt::transport {
namespace {

// How one key reads and writes its TransportConfig field: an unsigned integer with bounds (get,
// set), or a string (setText, which checks it; such keys have no get and print no default).
struct Key {
  std::string_view name;  // under [transport]
  std::string_view env;   // FLYT_ variable
  std::string_view doc;
  std::uint64_t min;
  std::uint64_t max;
  std::function<std::uint64_t(const TransportConfig&)> get;
  std::function<void(TransportConfig&, std::uint64_t)> set;
  std::function<Result<void>(TransportConfig&, std::string_view)> setText = {};
};

Result<void> setAuthToken(TransportConfig& config, std::string_view token) {
  if (token.size() < kMinAuthTokenBytes) {
    return fail(Errc::kInvalidArgument,
                fmt::format("auth_token is {} bytes; it must have at least {} (e.g. `openssl rand -hex 32`)",
                            token.size(), kMinAuthTokenBytes));
  }
  config.authToken = std::string(token);
  return {};
}

using std::chrono::milliseconds;

const std::vector<Key>& keys() {
  static const std::vector<Key> kTransportKeys = {
      {"peer_timeout_ms", "FLYT_PEER_TIMEOUT_MS",
       "a dead or silent peer is reported as an error within this many milliseconds", 10, 3'600'000,
       [](const TransportConfig& c) { return std::uint64_t(c.peerTimeout.count()); },
       [](TransportConfig& c, std::uint64_t v) { c.peerTimeout = milliseconds(v); }},
      {"connect_timeout_ms", "FLYT_CONNECT_TIMEOUT_MS",
       "how long a client waits for a server to accept and answer the handshake", 10, 3'600'000,
       [](const TransportConfig& c) { return std::uint64_t(c.connectTimeout.count()); },
       [](TransportConfig& c, std::uint64_t v) { c.connectTimeout = milliseconds(v); }},
      {"session_start_timeout_ms", "FLYT_SESSION_START_TIMEOUT_MS",
       "how long a client waits for its session's worker to create its GPU context and answer (after "
       "the node's redirect); many sessions starting at once on one GPU take seconds",
       10, 3'600'000, [](const TransportConfig& c) { return std::uint64_t(c.sessionStartTimeout.count()); },
       [](TransportConfig& c, std::uint64_t v) { c.sessionStartTimeout = milliseconds(v); }},
      {"max_message_bytes", "FLYT_MAX_MESSAGE_BYTES",
       "largest Cap'n Proto message accepted in one frame; larger frames are rejected as malformed",
       4096, 1ULL << 31, [](const TransportConfig& c) { return c.maxMessageBytes; },
       [](TransportConfig& c, std::uint64_t v) { c.maxMessageBytes = v; }},
      {"max_payload_bytes", "FLYT_MAX_PAYLOAD_BYTES",
       "largest inline payload accepted after one TCP frame", 4096, 1ULL << 40,
       [](const TransportConfig& c) { return c.maxPayloadBytes; },
       [](TransportConfig& c, std::uint64_t v) { c.maxPayloadBytes = v; }},
      {"shm_inline_payload_bytes", "FLYT_SHM_INLINE_PAYLOAD_BYTES",
       "largest payload carried inside a shared-memory message; larger data uses the data region", 0,
       64ULL << 20, [](const TransportConfig& c) { return c.shmInlinePayloadBytes; },
       [](TransportConfig& c, std::uint64_t v) { c.shmInlinePayloadBytes = v; }},
      {"shm_sessions", "FLYT_SHM_SESSIONS",
       "shared-memory sessions at once: flyt-node sizes the host's iceoryx chunk pools for this many "
       "(about 4 MiB of /dev/shm each with the default shm_inline_payload_bytes) and refuses more",
       1, 4096, [](const TransportConfig& c) { return std::uint64_t(c.shmSessions); },
       [](TransportConfig& c, std::uint64_t v) { c.shmSessions = std::uint32_t(v); }},
      {"region_slot_bytes", "FLYT_REGION_SLOT_BYTES",
       "bytes per staging slot of a session's data region", 4096, 1ULL << 30,
       [](const TransportConfig& c) { return c.regionSlotBytes; },
       [](TransportConfig& c, std::uint64_t v) { c.regionSlotBytes = v; }},
      {"region_slots", "FLYT_REGION_SLOTS", "number of staging slots in a session's data region", 2,
       1024, [](const TransportConfig& c) { return std::uint64_t(c.regionSlots); },
       [](TransportConfig& c, std::uint64_t v) { c.regionSlots = std::uint32_t(v); }},
      {"copy_threads", "FLYT_COPY_THREADS",
       "client threads that fill and drain staging slots for large pageable copies (1: the calling thread alone; default 4 with 8 or more CPUs, else 1)",
       1, 64, [](const TransportConfig& c) { return std::uint64_t(c.copyThreads); },
       [](TransportConfig& c, std::uint64_t v) { c.copyThreads = std::uint32_t(v); }},
      {"reply_spin_us", "FLYT_REPLY_SPIN_US",
       "client: microseconds it busy-polls for a reply before sleeping (default 20000 with 8 or more CPUs, else 50)",
       0, 10'000'000, [](const TransportConfig& c) { return std::uint64_t(c.replySpin.count()); },
       [](TransportConfig& c, std::uint64_t v) { c.replySpin = std::chrono::microseconds(v); }},
      {"auth_token", "FLYT_AUTH_TOKEN",
       "shared secret of TCP authentication (at least 16 bytes); a node with one admits only TCP clients that prove they hold it, a client with one talks only to nodes that prove it; empty: none (shm is never authenticated)",
       0, 0, nullptr, nullptr, setAuthToken},
      {"auth_token_file", "FLYT_AUTH_TOKEN_FILE",
       "file holding auth_token, readable only by its owner (mode 0600); preferred over auth_token",
       0, 0, nullptr, nullptr,
       [](TransportConfig& c, std::string_view path) -> Result<void> {
         auto token = readAuthTokenFile(std::string(path));
         if (!token) return std::unexpected(token.error());
         return setAuthToken(c, *token);
       }},
  };
  return kTransportKeys;
}

}  // namespace

bool TransportConfig::manyCpus() {
  static const bool many = std::thread::hardware_concurrency() >= 8;
  return many;
}

namespace {

const Key* findKey(std::string_view name) {
  for (const auto& key : keys()) {
    if (key.name == name) return &key;
  }
  return nullptr;
}

std::string where(std::string_view source, const toml::source_region& region) {
  return fmt::format("{}:{}", source, region.begin.line);
}

Result<void> checkBounds(const Key& key, std::uint64_t value, std::string_view origin) {
  if (value < key.min || value > key.max) {
    return fail(Errc::kInvalidArgument,
                fmt::format("{}: {} = {} is outside [{}, {}]", origin, key.name, value, key.min,
                            key.max));
  }
  return {};
}

}  // namespace

Result<toml::table> loadTomlFile(const std::string& path) {
  try {
    return toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source();
    return fail(Errc::kInvalidArgument,
                fmt::format("{}:{}:{}: {}", path, where.begin.line, where.begin.column,
                            e.description()));
  }
}

Result<TransportConfig> transportConfigFromToml(const toml::table& root, std::string_view sourceName) {
  TransportConfig config;
  const toml::node* node = root.get("transport");
  if (node == nullptr) return config;
  const toml::table* table = node->as_table();
  if (table == nullptr) {
    return fail(Errc::kInvalidArgument,
                fmt::format("{}: 'transport' must be a table", where(sourceName, node->source())));
  }
  for (const auto& [name, value] : *table) {
    const Key* key = findKey(name.str());
    if (key == nullptr) {
      std::string known;
      for (const auto& k : keys()) known += fmt::format("{}{}", known.empty() ? "" : ", ", k.name);
      return fail(Errc::kInvalidArgument,
                  fmt::format("{}: unknown key 'transport.{}' (known keys: {})",
                              where(sourceName, value.source()), name.str(), known));
    }
    if (key->setText) {
      const auto text = value.value<std::string>();
      if (!value.is_string() || !text) {
        return fail(Errc::kInvalidArgument, fmt::format("{}: transport.{} must be a string",
                                                        where(sourceName, value.source()), name.str()));
      }
      if (auto ok = key->setText(config, *text); !ok) {
        return fail(ok.error().code, fmt::format("{}: transport.{}: {}", where(sourceName, value.source()),
                                                 name.str(), ok.error().message));
      }
      continue;
    }
    const auto integer = value.value<std::int64_t>();
    if (!value.is_integer() || !integer || *integer < 0) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("{}: transport.{} must be a non-negative integer",
                              where(sourceName, value.source()), name.str()));
    }
    auto ok = checkBounds(*key, std::uint64_t(*integer), where(sourceName, value.source()));
    if (!ok) return std::unexpected(ok.error());
    key->set(config, std::uint64_t(*integer));
  }
  return config;
}

Result<TransportConfig> applyTransportEnv(TransportConfig config) {
  for (const auto& key : keys()) {
    const char* text = std::getenv(std::string(key.env).c_str());
    if (text == nullptr || *text == '\0') continue;
    const std::string_view sv(text);
    if (key.setText) {
      if (auto ok = key.setText(config, sv); !ok) {
        return fail(ok.error().code, fmt::format("environment {}: {}", key.env, ok.error().message));
      }
      continue;
    }
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(sv.data(), sv.data() + sv.size(), value);
    if (ec != std::errc() || end != sv.data() + sv.size()) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("environment {}='{}' is not a non-negative integer", key.env, sv));
    }
    auto ok = checkBounds(key, value, fmt::format("environment {}", key.env));
    if (!ok) return std::unexpected(ok.error());
    key.set(config, value);
  }
  return config;
}

Result<TransportConfig> transportConfigFromEnv() { return applyTransportEnv(TransportConfig{}); }

std::string describeTransportKeys() {
  const TransportConfig defaults;
  std::string out;
  for (const auto& key : keys()) {
    const std::string byDefault = key.get ? fmt::format("default {}", key.get(defaults)) : "default none";
    out += fmt::format("transport.{} ({}, {}): {}\n", key.name, key.env, byDefault, key.doc);
  }
  return out;
}

Result<std::string> readAuthTokenFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    const int error = errno;
    return fail(Errc::kSystem, fmt::format("auth_token_file '{}': {}", path, std::strerror(error)), error);
  }
  struct stat info {};
  std::string text;
  std::string problem;
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    problem = "is not a regular file";
  } else if (info.st_uid != ::geteuid()) {
    problem = fmt::format("belongs to uid {}, not to this user (uid {})", info.st_uid, ::geteuid());
  } else if ((info.st_mode & 077) != 0) {
    problem = fmt::format("has mode {:04o}: others may read it; chmod 600 it", info.st_mode & 07777);
  } else if (info.st_size > 4096) {
    problem = "is larger than 4096 bytes";
  } else {
    text.resize(static_cast<std::size_t>(info.st_size));
    const auto got = ::read(fd, text.data(), text.size());
    if (got != static_cast<ssize_t>(text.size())) problem = "could not be read whole";
  }
  ::close(fd);
  if (!problem.empty()) return fail(Errc::kInvalidArgument, fmt::format("auth_token_file '{}' {}", path, problem));
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return fail(Errc::kInvalidArgument, fmt::format("auth_token_file '{}' is empty", path));
  return text.substr(first, text.find_last_not_of(" \t\r\n") - first + 1);
}

}  // namespace flyt::transport
