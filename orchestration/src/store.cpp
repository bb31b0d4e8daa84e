#include "flyt/orchestration/store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "sqlite_statement.hpp"

namespace flyt::orchestration {
namespace {

using transport::Errc;
using transport::fail;
using transport::Result;

constexpr int kBusyTimeoutMs = 5000;

// Version 1. Session ids are stored as the signed bit pattern of the unsigned id (SQLite integers
// are signed 64-bit).
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (
  name TEXT PRIMARY KEY,
  token_hash TEXT NOT NULL,
  sm_percent INTEGER NOT NULL CHECK (sm_percent BETWEEN 1 AND 100),
  memory_bytes INTEGER NOT NULL CHECK (memory_bytes > 0),
  max_sessions INTEGER NOT NULL DEFAULT 1 CHECK (max_sessions >= 1),
  created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
  name TEXT PRIMARY KEY,
  host_id TEXT NOT NULL,
  shm_endpoint TEXT NOT NULL,
  tcp_endpoint TEXT NOT NULL,
  executor TEXT NOT NULL,
  last_seen_ms INTEGER NOT NULL,
  registered INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS gpus (
  node TEXT NOT NULL REFERENCES nodes(name) ON DELETE CASCADE,
  uuid TEXT NOT NULL,
  name TEXT NOT NULL,
  sm_count INTEGER NOT NULL,
  memory_bytes INTEGER NOT NULL,
  mps INTEGER NOT NULL,
  PRIMARY KEY (node, uuid));
CREATE TABLE IF NOT EXISTS sessions (
  id INTEGER PRIMARY KEY,
  tenant TEXT NOT NULL REFERENCES tenants(name),
  node TEXT NOT NULL REFERENCES nodes(name),
  gpu_uuid TEXT NOT NULL,
  sm_percent INTEGER NOT NULL,
  memory_bytes INTEGER NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('granted', 'active')),
  client_name TEXT NOT NULL,
  pid INTEGER NOT NULL,
  created_ms INTEGER NOT NULL,
  grant_expires_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_by_node ON sessions(node);
CREATE INDEX IF NOT EXISTS sessions_by_tenant ON sessions(tenant);
)sql";

constexpr const char* kSessionColumns =
    "id, tenant, node, gpu_uuid, sm_percent, memory_bytes, state, client_name, pid, created_ms, grant_expires_ms";

SessionRecord readSession(const Store::Statement& row) {
  SessionRecord s;
  s.id = static_cast<std::uint64_t>(row.integer(0));
  s.tenant = row.text(1);
  s.node = row.text(2);
  s.gpuUuid = row.text(3);
  s.smPercent = std::uint32_t(row.integer(4));
  s.memoryBytes = std::uint64_t(row.integer(5));
  s.state = row.text(6) == "active" ? SessionState::kActive : SessionState::kGranted;
  s.clientName = row.text(7);
  s.pid = std::uint32_t(row.integer(8));
  s.createdMs = row.integer(9);
  s.grantExpiresMs = row.integer(10);
  return s;
}

TenantRecord readTenant(const Store::Statement& row) {
  TenantRecord t;
  t.name = row.text(0);
  t.tokenHash = row.text(1);
  t.smPercent = std::uint32_t(row.integer(2));
  t.memoryBytes = std::uint64_t(row.integer(3));
  t.maxSessions = std::uint32_t(row.integer(4));
  t.createdMs = row.integer(5);
  return t;
}

// Creates the file 0600 before SQLite opens it, so the key is never readable by others, not even
// for a moment.
Result<void> createPrivateFile(const std::string& path) {
  const std::filesystem::path file(path);
  std::error_code ec;
  if (file.has_parent_path() && !std::filesystem::exists(file.parent_path(), ec)) {
    std::filesystem::create_directories(file.parent_path(), ec);
    if (ec) {
      return fail(Errc::kSystem, fmt::format("database: cannot create directory {}: {}",
                                             file.parent_path().string(), ec.message()));
    }
    std::filesystem::permissions(file.parent_path(), std::filesystem::perms::owner_all, ec);
  }
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int err = errno;
    return fail(Errc::kSystem, fmt::format("database: cannot open {}: {}", path, std::strerror(err)), err);
  }
  ::fchmod(fd, 0600);
  ::close(fd);
  return {};
}

}  // namespace

Store::Store(sqlite3* db, std::string path) : m_db(db), m_path(std::move(path)) {}

Store::Store(Store&& other) noexcept
    : m_db(std::exchange(other.m_db, nullptr)), m_path(std::move(other.m_path)), m_savepoints(other.m_savepoints) {}

Store& Store::operator=(Store&& other) noexcept {
  if (this != &other) {
    this->~Store();
    m_db = std::exchange(other.m_db, nullptr);
    m_path = std::move(other.m_path);
    m_savepoints = other.m_savepoints;
  }
  return *this;
}

Store::~Store() {
  if (m_db == nullptr) return;
  // Leaves a self-contained main file behind; closing the last connection checkpoints anyway, this
  // makes it explicit and truncates the WAL.
  sqlite3_exec(m_db, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr);
  sqlite3_close_v2(m_db);
}

Result<Store> Store::open(const std::string& path) {
  if (auto ok = createPrivateFile(path); !ok) return std::unexpected(ok.error());
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    auto error = fail(Errc::kSystem, fmt::format("database: cannot open {}: {}", path,
                                                 db ? sqlite3_errmsg(db) : "out of memory"));
    sqlite3_close_v2(db);
    return error;
  }
  Store store(db, path);
  sqlite3_busy_timeout(db, kBusyTimeoutMs);
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON"}) {
    if (auto ok = store.exec(pragma); !ok) return std::unexpected(ok.error());
  }
  if (auto ok = store.migrate(); !ok) return std::unexpected(ok.error());
  return store;
}

Result<void> Store::exec(const char* sql) {
  char* message = nullptr;
  if (sqlite3_exec(m_db, sql, nullptr, nullptr, &message) != SQLITE_OK) {
    auto error = fail(Errc::kSystem, fmt::format("database {}: {}", m_path, message ? message : "error"));
    sqlite3_free(message);
    return error;
  }
  return {};
}

Result<void> Store::migrate() {
  auto txn = transaction();
  if (auto ok = exec(kSchema); !ok) return ok;
  Statement query(m_db, "SELECT version FROM schema_version");
  auto row = query.step();
  if (!row) return std::unexpected(row.error());
  if (!*row) {
    Statement insert(m_db, "INSERT INTO schema_version (version) VALUES (?)");
    if (auto ok = insert.bind(std::int64_t(kSchemaVersion)).run(); !ok) return ok;
  } else if (query.integer(0) != kSchemaVersion) {
    return fail(Errc::kUnsupported, fmt::format("database {} has schema version {}; this flyt-orchestrator "
                                                "speaks version {}",
                                                m_path, query.integer(0), kSchemaVersion));
  }
  return txn.commit();
}

Result<std::string> Store::journalMode() {
  Statement query(m_db, "PRAGMA journal_mode");
  auto row = query.step();
  if (!row) return std::unexpected(row.error());
  return query.text(0);
}

Store::Transaction::Transaction(Store& store) : m_store(&store) {
  const auto sql = fmt::format("SAVEPOINT sp{}", store.m_savepoints);
  m_open = sqlite3_exec(store.m_db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK;
  if (m_open) ++store.m_savepoints;
}

Store::Transaction::~Transaction() {
  if (!m_open) return;
  --m_store->m_savepoints;
  const auto sql = fmt::format("ROLLBACK TO sp{0}; RELEASE sp{0}", m_store->m_savepoints);
  sqlite3_exec(m_store->m_db, sql.c_str(), nullptr, nullptr, nullptr);
}

Result<void> Store::Transaction::commit() {
  if (!m_open) return sqliteFailure(m_store->m_db, "begin transaction");
  const auto sql = fmt::format("RELEASE sp{}", m_store->m_savepoints - 1);
  if (sqlite3_exec(m_store->m_db, sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
    return sqliteFailure(m_store->m_db, "commit");
  }
  m_open = false;
  --m_store->m_savepoints;
  return {};
}

Result<std::optional<std::string>> Store::meta(std::string_view key) {
  Statement query(m_db, "SELECT value FROM meta WHERE key = ?");
  auto row = query.bind(key).step();
  if (!row) return std::unexpected(row.error());
  if (!*row) return std::optional<std::string>();
  return std::optional<std::string>(query.text(0));
}

Result<void> Store::setMeta(std::string_view key, std::string_view value) {
  return Statement(m_db, "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)").bind(key, value).run();
}

Result<std::vector<TenantRecord>> Store::tenants() {
  Statement query(m_db, "SELECT name, token_hash, sm_percent, memory_bytes, max_sessions, created FROM tenants "
                        "ORDER BY name");
  std::vector<TenantRecord> out;
  while (true) {
    auto row = query.step();
    if (!row) return std::unexpected(row.error());
    if (!*row) return out;
    out.push_back(readTenant(query));
  }
}

Result<std::optional<TenantRecord>> Store::tenant(std::string_view name) {
  Statement query(m_db, "SELECT name, token_hash, sm_percent, memory_bytes, max_sessions, created FROM tenants "
                        "WHERE name = ?");
  auto row = query.bind(name).step();
  if (!row) return std::unexpected(row.error());
  if (!*row) return std::optional<TenantRecord>();
  return std::optional<TenantRecord>(readTenant(query));
}

Result<void> Store::putTenant(const TenantRecord& t) {
  // An upsert rather than INSERT OR REPLACE: REPLACE deletes the row first, which the sessions'
  // foreign key would refuse.
  return Statement(m_db, "INSERT INTO tenants (name, token_hash, sm_percent, memory_bytes, max_sessions, created) "
                         "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET token_hash = excluded.token_hash, "
                         "sm_percent = excluded.sm_percent, memory_bytes = excluded.memory_bytes, "
                         "max_sessions = excluded.max_sessions")
      .bind(t.name, t.tokenHash, t.smPercent, t.memoryBytes, t.maxSessions, t.createdMs)
      .run();
}

Result<std::vector<SessionRecord>> Store::removeTenant(std::string_view name) {
  auto txn = transaction();
  auto removed = querySessions("WHERE tenant = ?", name);
  if (!removed) return removed;
  if (auto ok = Statement(m_db, "DELETE FROM sessions WHERE tenant = ?").bind(name).run(); !ok) {
    return std::unexpected(ok.error());
  }
  if (auto ok = Statement(m_db, "DELETE FROM tenants WHERE name = ?").bind(name).run(); !ok) {
    return std::unexpected(ok.error());
  }
  if (auto ok = txn.commit(); !ok) return std::unexpected(ok.error());
  return removed;
}

Result<std::vector<NodeRecord>> Store::nodes() {
  Statement query(m_db, "SELECT name, host_id, shm_endpoint, tcp_endpoint, executor, last_seen_ms, registered "
                        "FROM nodes ORDER BY name");
  std::vector<NodeRecord> out;
  while (true) {
    auto row = query.step();
    if (!row) return std::unexpected(row.error());
    if (!*row) return out;
    out.push_back(NodeRecord{query.text(0), query.text(1), query.text(2), query.text(3), query.text(4),
                             query.integer(5), query.integer(6)});
  }
}

Result<std::vector<GpuRecord>> Store::gpus() {
  Statement query(m_db, "SELECT node, uuid, name, sm_count, memory_bytes, mps FROM gpus ORDER BY node, uuid");
  std::vector<GpuRecord> out;
  while (true) {
    auto row = query.step();
    if (!row) return std::unexpected(row.error());
    if (!*row) return out;
    out.push_back(GpuRecord{query.text(0), query.text(1), query.text(2), std::uint32_t(query.integer(3)),
                            std::uint64_t(query.integer(4)), query.integer(5) != 0});
  }
}

Result<void> Store::putNode(const NodeRecord& n, const std::vector<GpuRecord>& gpus) {
  auto txn = transaction();
  auto ok = Statement(m_db, "INSERT INTO nodes (name, host_id, shm_endpoint, tcp_endpoint, executor, last_seen_ms, "
                            "registered) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                            "host_id = excluded.host_id, shm_endpoint = excluded.shm_endpoint, "
                            "tcp_endpoint = excluded.tcp_endpoint, executor = excluded.executor, "
                            "last_seen_ms = excluded.last_seen_ms, registered = excluded.registered")
                .bind(n.name, n.hostId, n.shmEndpoint, n.tcpEndpoint, n.executor, n.lastSeenMs, n.registeredMs)
                .run();
  if (!ok) return ok;
  if (ok = Statement(m_db, "DELETE FROM gpus WHERE node = ?").bind(n.name).run(); !ok) return ok;
  for (const auto& g : gpus) {
    ok = Statement(m_db, "INSERT INTO gpus (node, uuid, name, sm_count, memory_bytes, mps) VALUES (?, ?, ?, ?, ?, ?)")
             .bind(n.name, g.uuid, g.name, g.smCount, g.memoryBytes, g.mps)
             .run();
    if (!ok) return ok;
  }
  return txn.commit();
}

Result<void> Store::touchNode(std::string_view name, std::int64_t lastSeenMs) {
  return Statement(m_db, "UPDATE nodes SET last_seen_ms = ? WHERE name = ?").bind(lastSeenMs, name).run();
}

Result<std::vector<SessionRecord>> Store::querySessions(const char* where, std::string_view arg) {
  const auto sql = fmt::format("SELECT {} FROM sessions {} ORDER BY created_ms, id", kSessionColumns, where);
  Statement query(m_db, sql.c_str());
  if (!arg.empty()) query.bind(arg);
  std::vector<SessionRecord> out;
  while (true) {
    auto row = query.step();
    if (!row) return std::unexpected(row.error());
    if (!*row) return out;
    out.push_back(readSession(query));
  }
}

Result<std::vector<SessionRecord>> Store::sessions() { return querySessions("", {}); }

Result<std::optional<SessionRecord>> Store::session(std::uint64_t id) {
  const auto sql = fmt::format("SELECT {} FROM sessions WHERE id = ?", kSessionColumns);
  Statement query(m_db, sql.c_str());
  auto row = query.bind(id).step();
  if (!row) return std::unexpected(row.error());
  if (!*row) return std::optional<SessionRecord>();
  return std::optional<SessionRecord>(readSession(query));
}

Result<void> Store::putSession(const SessionRecord& s) {
  const auto sql = fmt::format("INSERT OR REPLACE INTO sessions ({}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               kSessionColumns);
  return Statement(m_db, sql.c_str())
      .bind(s.id, s.tenant, s.node, s.gpuUuid, s.smPercent, s.memoryBytes, sessionStateName(s.state), s.clientName,
            s.pid, s.createdMs, s.grantExpiresMs)
      .run();
}

Result<bool> Store::removeSession(std::uint64_t id) {
  Statement remove(m_db, "DELETE FROM sessions WHERE id = ?");
  if (auto ok = remove.bind(id).run(); !ok) return std::unexpected(ok.error());
  return sqlite3_changes(m_db) > 0;
}

Result<std::vector<SessionRecord>> Store::removeSessionsOfNode(std::string_view node) {
  auto txn = transaction();
  auto removed = querySessions("WHERE node = ?", node);
  if (!removed) return removed;
  if (auto ok = Statement(m_db, "DELETE FROM sessions WHERE node = ?").bind(node).run(); !ok) {
    return std::unexpected(ok.error());
  }
  if (auto ok = txn.commit(); !ok) return std::unexpected(ok.error());
  return removed;
}

}  // namespace flyt::orchestration
