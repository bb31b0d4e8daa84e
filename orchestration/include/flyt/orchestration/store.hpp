// The orchestrator's state in one SQLite file: tenants, nodes and their GPUs, sessions, and the
// signing key (table meta). WAL journal, synchronous=NORMAL (a power loss may lose the last
// transactions, never corrupt the file), foreign keys on, a busy timeout, and a schema_version
// table. The file (and its -wal/-shm companions, which SQLite creates with the same mode) is 0600:
// it holds the private key and the token hashes.
//
// Every mutating method is one transaction. A caller that needs several mutations to commit
// together wraps them in transaction(); methods use savepoints, so they nest inside it.
//
// Threading: one thread at a time (the orchestrator's event loop). Not copyable; movable.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "flyt/orchestration/records.hpp"
#include "flyt/transport/error.hpp"

struct sqlite3;

namespace flyt::orchestration {

class Store {
 public:
  static constexpr int kSchemaVersion = 1;

  // Opens (creating, with its parent directories, if needed) the database at `path`.
  [[nodiscard]] static transport::Result<Store> open(const std::string& path);

  Store(Store&&) noexcept;
  Store& operator=(Store&&) noexcept;
  ~Store();  // checkpoints the WAL into the main file and closes

  [[nodiscard]] const std::string& path() const { return m_path; }
  // The journal mode SQLite reports ("wal").
  [[nodiscard]] transport::Result<std::string> journalMode();

  // Commits when commit() is called; rolls back when destroyed without it.
  class Transaction {
   public:
    explicit Transaction(Store& store);
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    ~Transaction();
    [[nodiscard]] transport::Result<void> commit();

   private:
    Store* m_store;
    bool m_open = false;
  };
  [[nodiscard]] Transaction transaction() { return Transaction(*this); }

  // meta: small named values (the signing key).
  [[nodiscard]] transport::Result<std::optional<std::string>> meta(std::string_view key);
  [[nodiscard]] transport::Result<void> setMeta(std::string_view key, std::string_view value);

  [[nodiscard]] transport::Result<std::vector<TenantRecord>> tenants();
  [[nodiscard]] transport::Result<std::optional<TenantRecord>> tenant(std::string_view name);
  // Inserts, or replaces the tenant of the same name.
  [[nodiscard]] transport::Result<void> putTenant(const TenantRecord& tenant);
  // Deletes the tenant and its sessions; answers the sessions it deleted.
  [[nodiscard]] transport::Result<std::vector<SessionRecord>> removeTenant(std::string_view name);

  [[nodiscard]] transport::Result<std::vector<NodeRecord>> nodes();
  [[nodiscard]] transport::Result<std::vector<GpuRecord>> gpus();
  // Inserts or replaces the node and replaces its GPU list.
  [[nodiscard]] transport::Result<void> putNode(const NodeRecord& node, const std::vector<GpuRecord>& gpus);
  [[nodiscard]] transport::Result<void> touchNode(std::string_view name, std::int64_t lastSeenMs);

  [[nodiscard]] transport::Result<std::vector<SessionRecord>> sessions();
  [[nodiscard]] transport::Result<std::optional<SessionRecord>> session(std::uint64_t id);
  [[nodiscard]] transport::Result<void> putSession(const SessionRecord& session);
  // False when no such session existed.
  [[nodiscard]] transport::Result<bool> removeSession(std::uint64_t id);
  // Deletes the node's sessions; answers those it deleted.
  [[nodiscard]] transport::Result<std::vector<SessionRecord>> removeSessionsOfNode(std::string_view node);

  class Statement;

 private:
  Store(sqlite3* db, std::string path);
  [[nodiscard]] transport::Result<void> exec(const char* sql);
  [[nodiscard]] transport::Result<void> migrate();
  [[nodiscard]] transport::Result<std::vector<SessionRecord>> querySessions(const char* sql, std::string_view arg);

  sqlite3* m_db = nullptr;
  std::string m_path;
  int m_savepoints = 0;  // nesting depth, to name savepoints uniquely
};

}  // namespace flyt::orchestration
