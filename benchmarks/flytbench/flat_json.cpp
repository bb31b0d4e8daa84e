#include "flat_json.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>

namespace flyt::flytbench {

namespace {

class Reader {
 public:
  explicit Reader(std::string_view text) : m_text(text) {}

  void skipSpace() {
    while (m_pos < m_text.size() && (m_text[m_pos] == ' ' || m_text[m_pos] == '\t' || m_text[m_pos] == '\r' ||
                                     m_text[m_pos] == '\n')) {
      ++m_pos;
    }
  }
  bool take(char c) {
    skipSpace();
    if (m_pos < m_text.size() && m_text[m_pos] == c) {
      ++m_pos;
      return true;
    }
    return false;
  }
  [[nodiscard]] bool atEnd() {
    skipSpace();
    return m_pos == m_text.size();
  }
  [[nodiscard]] std::string error(std::string_view what) const {
    return fmt::format("{} at offset {} of '{}'", what, m_pos, m_text.substr(0, 200));
  }

  std::expected<std::string, std::string> stringLiteral() {
    if (!take('"')) return std::unexpected(error("expected a string"));
    std::string out;
    while (m_pos < m_text.size() && m_text[m_pos] != '"') {
      char c = m_text[m_pos++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (m_pos >= m_text.size()) break;
      c = m_text[m_pos++];
      switch (c) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'u': {
          unsigned code = 0;
          const auto hex = m_text.substr(m_pos, 4);
          if (std::from_chars(hex.data(), hex.data() + hex.size(), code, 16).ptr != hex.data() + 4) {
            return std::unexpected(error("bad \\u escape"));
          }
          m_pos += 4;
          // The probe escapes control characters only; anything wider is kept as '?'.
          out += code < 0x80 ? char(code) : '?';
          break;
        }
        default:
          out += c;  // \" \\ \/
      }
    }
    if (!take('"')) return std::unexpected(error("unterminated string"));
    return out;
  }

  std::expected<JsonValue, std::string> value() {
    skipSpace();
    if (m_pos >= m_text.size()) return std::unexpected(error("expected a value"));
    if (m_text[m_pos] == '"') {
      auto text = stringLiteral();
      if (!text) return std::unexpected(text.error());
      return JsonValue{JsonValue::Type::kString, std::move(*text)};
    }
    for (const auto& [word, type] :
         {std::pair{"true", JsonValue::Type::kBool}, std::pair{"false", JsonValue::Type::kBool},
          std::pair{"null", JsonValue::Type::kNull}}) {
      if (m_text.substr(m_pos).starts_with(word)) {
        m_pos += std::string_view(word).size();
        return JsonValue{type, type == JsonValue::Type::kBool ? word : ""};
      }
    }
    const std::size_t start = m_pos;
    while (m_pos < m_text.size() &&
           std::string_view("+-0123456789.eE").find(m_text[m_pos]) != std::string_view::npos) {
      ++m_pos;
    }
    if (m_pos == start) return std::unexpected(error("expected a value"));
    return JsonValue{JsonValue::Type::kNumber, std::string(m_text.substr(start, m_pos - start))};
  }

 private:
  std::string_view m_text;
  std::size_t m_pos = 0;
};

}  // namespace

std::expected<FlatJson, std::string> FlatJson::parse(std::string_view text) {
  Reader reader(text);
  FlatJson object;
  if (!reader.take('{')) return std::unexpected(reader.error("expected '{'"));
  if (!reader.take('}')) {
    do {
      auto key = reader.stringLiteral();
      if (!key) return std::unexpected(key.error());
      if (!reader.take(':')) return std::unexpected(reader.error("expected ':'"));
      auto value = reader.value();
      if (!value) return std::unexpected(value.error());
      object.m_members.emplace_back(std::move(*key), std::move(*value));
    } while (reader.take(','));
    if (!reader.take('}')) return std::unexpected(reader.error("expected ',' or '}'"));
  }
  if (!reader.atEnd()) return std::unexpected(reader.error("text after the object"));
  return object;
}

const JsonValue* FlatJson::find(std::string_view key) const {
  for (const auto& [name, value] : m_members) {
    if (name == key) return &value;
  }
  return nullptr;
}

std::optional<std::string> FlatJson::string(std::string_view key) const {
  const JsonValue* value = find(key);
  if (value == nullptr || value->type != JsonValue::Type::kString) return std::nullopt;
  return value->text;
}

std::optional<double> FlatJson::number(std::string_view key) const {
  const JsonValue* value = find(key);
  double out = 0;
  if (value == nullptr || value->type != JsonValue::Type::kNumber) return std::nullopt;
  const auto& t = value->text;
  if (std::from_chars(t.data(), t.data() + t.size(), out).ec != std::errc{}) return std::nullopt;
  return out;
}

std::optional<std::int64_t> FlatJson::integer(std::string_view key) const {
  const JsonValue* value = find(key);
  std::int64_t out = 0;
  if (value == nullptr || value->type != JsonValue::Type::kNumber) return std::nullopt;
  const auto& t = value->text;
  const auto parsed = std::from_chars(t.data(), t.data() + t.size(), out);
  if (parsed.ec != std::errc{} || parsed.ptr != t.data() + t.size()) return std::nullopt;
  return out;
}

std::optional<bool> FlatJson::boolean(std::string_view key) const {
  const JsonValue* value = find(key);
  if (value == nullptr || value->type != JsonValue::Type::kBool) return std::nullopt;
  return value->text == "true";
}

std::string FlatJson::dump() const {
  std::string out = "{";
  for (const auto& [name, value] : m_members) {
    if (out.size() > 1) out += ',';
    out += jsonString(name) + ':';
    switch (value.type) {
      case JsonValue::Type::kNull:
        out += "null";
        break;
      case JsonValue::Type::kString:
        out += jsonString(value.text);
        break;
      default:
        out += value.text;
    }
  }
  return out + "}";
}

std::string jsonString(std::string_view text) {
  std::string out = "\"";
  for (const unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20) {
      out += fmt::format("\\u{:04x}", unsigned(c));
    } else {
      out += char(c);
    }
  }
  return out + '"';
}

std::string jsonNumber(double value) {
  if (!std::isfinite(value)) return "null";
  return fmt::format("{}", value);
}

}  // namespace flyt::flytbench
