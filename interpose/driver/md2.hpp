// MD2 (RFC 1319) and HMAC-MD2 (RFC 2104 with MD2's 16-byte block): the keyed digest NVIDIA's
// runtime expects from the driver's integrity-check table (export_tables.cpp). Not for anything
// that needs a secure hash.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace flyt::interpose::cu {

using Md2Digest = std::array<std::uint8_t, 16>;

[[nodiscard]] Md2Digest md2(std::span<const std::uint8_t> message) noexcept;
[[nodiscard]] Md2Digest hmacMd2(std::span<const std::uint8_t, 16> key, std::span<const std::uint8_t> message) noexcept;

}  // namespace flyt::interpose::cu
