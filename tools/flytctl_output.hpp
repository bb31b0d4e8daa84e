// flytctl's output: aligned tables and key/value blocks for people, JSON for programs.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace flyt::flytctl {

// Columns padded to their widest cell, two spaces apart, no trailing spaces. An empty header
// prints no header line (key/value blocks).
class Table {
 public:
  explicit Table(std::vector<std::string> header) : m_header(std::move(header)) {}
  void add(std::vector<std::string> row) { m_rows.push_back(std::move(row)); }
  [[nodiscard]] std::string render() const;

 private:
  std::vector<std::string> m_header;
  std::vector<std::vector<std::string>> m_rows;
};

// A compact JSON document written in order. Keys and strings are escaped; integers are exact
// (session ids are written as hex strings, since JSON readers often hold numbers as doubles).
class JsonWriter {
 public:
  JsonWriter& beginObject();
  JsonWriter& endObject();
  JsonWriter& beginArray();
  JsonWriter& endArray();
  JsonWriter& key(std::string_view name);
  JsonWriter& value(std::string_view text);
  JsonWriter& value(const char* text) { return value(std::string_view(text)); }
  JsonWriter& value(std::uint64_t number);
  JsonWriter& value(std::int64_t number);
  JsonWriter& value(std::uint32_t number) { return value(std::uint64_t(number)); }
  JsonWriter& value(bool flag);
  [[nodiscard]] const std::string& str() const { return m_out; }

 private:
  void separate();
  std::string m_out;
  std::vector<bool> m_first;  // per open container: no element written yet
  bool m_afterKey = false;
};

// "3 s ago", "5 min ago", "2 h ago", "4 d ago"; "never" for 0.
[[nodiscard]] std::string age(std::int64_t thenMs, std::int64_t nowMs);

}  // namespace flyt::flytctl
