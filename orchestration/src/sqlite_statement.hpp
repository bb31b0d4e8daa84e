// A prepared SQLite statement with typed binds and columns; errors carry SQLite's message.
// Internal to the store.
#pragma once

#include <sqlite3.h>

#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "flyt/orchestration/store.hpp"
#include "flyt/transport/error.hpp"

namespace flyt::orchestration {

inline transport::Result<void> sqliteFailure(sqlite3* db, std::string_view what) {
  return transport::fail(transport::Errc::kSystem, fmt::format("database: {}: {}", what, sqlite3_errmsg(db)));
}

class Store::Statement {
 public:
  Statement(sqlite3* db, const char* sql) : m_db(db) {
    m_rc = sqlite3_prepare_v2(db, sql, -1, &m_stmt, nullptr);
    m_sql = sql;
  }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement() { sqlite3_finalize(m_stmt); }

  // Binds parameters 1..N in order.
  template <class... Args>
  Statement& bind(const Args&... args) {
    int index = 0;
    (bindOne(++index, args), ...);
    return *this;
  }

  // SQLITE_ROW: true; SQLITE_DONE: false; otherwise an error.
  [[nodiscard]] transport::Result<bool> step() {
    if (m_rc != SQLITE_OK) return fail("prepare");
    const int rc = sqlite3_step(m_stmt);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return fail("step");
  }
  [[nodiscard]] transport::Result<void> run() {
    auto row = step();
    if (!row) return std::unexpected(row.error());
    return {};
  }

  [[nodiscard]] std::int64_t integer(int column) const { return sqlite3_column_int64(m_stmt, column); }
  [[nodiscard]] std::string text(int column) const {
    const auto* data = sqlite3_column_text(m_stmt, column);
    return data == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(data));
  }

 private:
  void bindOne(int index, std::int64_t value) { record(sqlite3_bind_int64(m_stmt, index, value)); }
  void bindOne(int index, std::uint64_t value) { bindOne(index, static_cast<std::int64_t>(value)); }
  void bindOne(int index, std::uint32_t value) { bindOne(index, static_cast<std::int64_t>(value)); }
  void bindOne(int index, bool value) { bindOne(index, static_cast<std::int64_t>(value ? 1 : 0)); }
  void bindOne(int index, std::string_view value) {
    record(sqlite3_bind_text(m_stmt, index, value.data(), int(value.size()), SQLITE_TRANSIENT));
  }
  void bindOne(int index, const std::string& value) { bindOne(index, std::string_view(value)); }
  void bindOne(int index, const char* value) { bindOne(index, std::string_view(value)); }
  void record(int rc) {
    if (m_rc == SQLITE_OK) m_rc = rc;
  }
  [[nodiscard]] std::unexpected<transport::Error> fail(std::string_view what) const {
    return std::unexpected(sqliteFailure(m_db, fmt::format("{} of '{}'", what, m_sql)).error());
  }

  sqlite3* m_db;
  sqlite3_stmt* m_stmt = nullptr;
  int m_rc = SQLITE_OK;
  const char* m_sql = "";
};

}  // namespace flyt::orchestration
