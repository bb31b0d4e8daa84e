// The fatbinary as nvcc embeds it, and its identity on the wire (docs/dev/cuda13-runtime-abi.md §2.8).
//
// __cudaRegisterFatBinary receives a wrapper {u32 magic 0x466243B1, u32 version 1|2, data, ...};
// `data` points at the fatbin, whose 16-byte header {u32 magic 0xBA55ED50, u16 version, u16
// headerSize, u64 fatSize} says that the image is headerSize + fatSize bytes long. The client sends
// exactly those bytes; the worker hands them to cudaLibraryLoadData as they are. Both sides name an
// image by its 64-bit FNV-1a hash (the worker recomputes and checks it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <expected>
#include <span>

namespace flyt::api {

inline constexpr std::uint32_t kFatbinWrapperMagic = 0x466243B1;
inline constexpr std::uint32_t kFatbinMagic = 0xBA55ED50;
// An image larger than this is refused as malformed: nvcc's are kilobytes to a few hundred MiB.
inline constexpr std::uint64_t kMaxFatbinBytes = 4ULL << 30;

struct FatbinWrapper {  // __fatBinC_Wrapper_t (fatbinary_section.h)
  std::uint32_t magic;
  std::uint32_t version;
  const void* data;
  const void* filenameOrFatbins;
};
static_assert(sizeof(FatbinWrapper) == 24);

struct FatbinHeader {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t headerSize;
  std::uint64_t fatSize;
};
static_assert(sizeof(FatbinHeader) == 16);

enum class FatbinError { kNullWrapper, kWrapperMagic, kWrapperVersion, kNullImage, kImageMagic, kImageSize };

[[nodiscard]] constexpr const char* describe(FatbinError error) noexcept {
  switch (error) {
    case FatbinError::kNullWrapper: return "null fatbin wrapper";
    case FatbinError::kWrapperMagic: return "fatbin wrapper magic is not 0x466243B1";
    case FatbinError::kWrapperVersion: return "fatbin wrapper version is neither 1 nor 2";
    case FatbinError::kNullImage: return "fatbin wrapper has no image";
    case FatbinError::kImageMagic: return "fatbin image magic is not 0xBA55ED50";
    case FatbinError::kImageSize: return "fatbin image size is implausible";
  }
  return "bad fatbin";
}

// Checks a fatbin image's header; `available` bounds the bytes that may be read (SIZE_MAX when the
// image is in the application's memory and only its header says how long it is). Returns its length.
[[nodiscard]] inline std::expected<std::size_t, FatbinError> fatbinImageBytes(
    const void* image, std::size_t available = SIZE_MAX) noexcept {
  if (image == nullptr) return std::unexpected(FatbinError::kNullImage);
  if (available < sizeof(FatbinHeader)) return std::unexpected(FatbinError::kImageSize);
  FatbinHeader header;
  std::memcpy(&header, image, sizeof header);
  if (header.magic != kFatbinMagic) return std::unexpected(FatbinError::kImageMagic);
  if (header.headerSize < sizeof(FatbinHeader) || header.fatSize > kMaxFatbinBytes) {
    return std::unexpected(FatbinError::kImageSize);
  }
  const std::uint64_t total = header.headerSize + header.fatSize;
  if (total > available) return std::unexpected(FatbinError::kImageSize);
  return static_cast<std::size_t>(total);
}

// The image a __cudaRegisterFatBinary wrapper points at, checked.
[[nodiscard]] inline std::expected<std::span<const std::byte>, FatbinError> fatbinImage(
    const void* wrapper) noexcept {
  if (wrapper == nullptr) return std::unexpected(FatbinError::kNullWrapper);
  FatbinWrapper w;
  std::memcpy(&w, wrapper, sizeof w);
  if (w.magic != kFatbinWrapperMagic) return std::unexpected(FatbinError::kWrapperMagic);
  if (w.version != 1 && w.version != 2) return std::unexpected(FatbinError::kWrapperVersion);
  auto bytes = fatbinImageBytes(w.data);
  if (!bytes) return std::unexpected(bytes.error());
  return std::span<const std::byte>(static_cast<const std::byte*>(w.data), *bytes);
}

// 64-bit FNV-1a of the image: its name on the wire.
[[nodiscard]] inline std::uint64_t fatbinHash(std::span<const std::byte> image) noexcept {
  std::uint64_t hash = 0xcbf29ce484222325ULL;
  for (std::byte b : image) {
    hash ^= static_cast<std::uint8_t>(b);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

}  // namespace flyt::api
