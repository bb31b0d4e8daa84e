// Flat JSON objects: the probe's protocol lines ({"kind":"result","bytes":4096,...}) and the
// pieces flytbench writes. Values are strings, numbers, true/false or null; no nesting. Numbers keep
// their text, so that nanosecond stamps above 2^53 are not rounded.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace flyt::flytbench {

struct JsonValue {
  enum class Type { kNull, kBool, kNumber, kString };
  Type type = Type::kNull;
  std::string text;  // the number's digits or the unescaped string; "true"/"false" for kBool
};

class FlatJson {
 public:
  // Parses one object; the message says where it stopped.
  [[nodiscard]] static std::expected<FlatJson, std::string> parse(std::string_view text);

  [[nodiscard]] const JsonValue* find(std::string_view key) const;
  // Typed look-ups: nullopt when the key is missing or has another type.
  [[nodiscard]] std::optional<std::string> string(std::string_view key) const;
  [[nodiscard]] std::optional<double> number(std::string_view key) const;
  [[nodiscard]] std::optional<std::int64_t> integer(std::string_view key) const;
  [[nodiscard]] std::optional<bool> boolean(std::string_view key) const;  // nullopt for null too

  // The object again, keys in their original order.
  [[nodiscard]] std::string dump() const;

  [[nodiscard]] const std::vector<std::pair<std::string, JsonValue>>& members() const { return m_members; }

 private:
  std::vector<std::pair<std::string, JsonValue>> m_members;
};

// A JSON string literal, quotes included.
[[nodiscard]] std::string jsonString(std::string_view text);
// A JSON number; null for NaN and infinities (JSON has neither).
[[nodiscard]] std::string jsonNumber(double value);

}  // namespace flyt::flytbench
