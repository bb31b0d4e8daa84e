// Sizes as people write and read them: "8GiB", "512MiB", "1.5GB", plain bytes; "8.0 GiB".
// One parser for every place a person writes a size (node.toml, flyt-node options, flytctl), so a
// unit means the same everywhere.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "flyt/transport/error.hpp"

namespace flyt::transport {

// Bytes in a size: a number (decimals allowed with a unit) and an optional unit, case-insensitive,
// with or without a space: B, KiB/MiB/GiB/TiB and bare K/M/G/T (powers of 1024), KB/MB/GB/TB
// (powers of 1000).
// kInvalidArgument names the text and the accepted units.
[[nodiscard]] Result<std::uint64_t> parseSize(std::string_view text);

// "8.0 GiB", "512.0 MiB", "100 B": one decimal in the largest binary unit that fits.
[[nodiscard]] std::string formatBytes(std::uint64_t bytes);

}  // namespace flyt::transport
