#include "flyt/transport/units.hpp"

#include <fmt/format.h>

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>

namespace flyt::transport {
namespace {

struct Unit {
  std::string_view name;
  std::uint64_t bytes;
};

constexpr std::array<Unit, 13> kUnits = {{{"b", 1},
                                          {"k", 1ULL << 10},
                                          {"m", 1ULL << 20},
                                          {"g", 1ULL << 30},
                                          {"t", 1ULL << 40},
                                         {"kib", 1ULL << 10},
                                         {"mib", 1ULL << 20},
                                         {"gib", 1ULL << 30},
                                         {"tib", 1ULL << 40},
                                         {"kb", 1'000},
                                         {"mb", 1'000'000},
                                         {"gb", 1'000'000'000},
                                         {"tb", 1'000'000'000'000}}};

Result<std::uint64_t> refuse(std::string_view text) {
  return fail(Errc::kInvalidArgument,
                         fmt::format("'{}' is not a size (examples: 8GiB, 512MiB, 1.5GB, 1048576; units "
                                     "B, KiB, MiB, GiB, TiB (or K, M, G, T), KB, MB, GB, TB)",
                                     text));
}

}  // namespace

Result<std::uint64_t> parseSize(std::string_view text) {
  std::size_t end = 0;
  while (end < text.size() && (std::isdigit(static_cast<unsigned char>(text[end])) || text[end] == '.')) ++end;
  const std::string_view number = text.substr(0, end);
  std::string_view unit = text.substr(end);
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  if (number.empty()) return refuse(text);

  std::uint64_t multiplier = 1;
  if (!unit.empty()) {
    std::string lower;
    for (char c : unit) lower += char(std::tolower(static_cast<unsigned char>(c)));
    const Unit* found = nullptr;
    for (const auto& candidate : kUnits) {
      if (candidate.name == lower) found = &candidate;
    }
    if (found == nullptr) return refuse(text);
    multiplier = found->bytes;
  }
  if (number.find('.') == std::string_view::npos) {
    std::uint64_t value = 0;
    auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
    if (ec != std::errc{} || ptr != number.data() + number.size()) return refuse(text);
    if (value > UINT64_MAX / multiplier) return refuse(text);
    return value * multiplier;
  }
  double value = 0;
  auto [ptr, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
  if (ec != std::errc{} || ptr != number.data() + number.size() || unit.empty()) return refuse(text);
  const double bytes = std::round(value * double(multiplier));
  if (!(bytes >= 0) || bytes >= 1.8e19) return refuse(text);
  return std::uint64_t(bytes);
}

std::string formatBytes(std::uint64_t bytes) {
  constexpr std::array<std::string_view, 4> kNames = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return fmt::format("{} B", bytes);
  std::size_t index = 0;
  double value = double(bytes) / 1024.0;
  while (index + 1 < kNames.size() && value >= 1024.0) {
    value /= 1024.0;
    ++index;
  }
  return fmt::format("{:.1f} {}", value, kNames[index]);
}

}  // namespace flyt::transport
