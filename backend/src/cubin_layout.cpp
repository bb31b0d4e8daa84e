// Formats read here, all little-endian. Verified on nvcc 13.0.88 (-arch=sm_90, sm_80) by decoding
// the bytes of `nvcc -fatbin`/`-cubin` builds and of an nvcc-built executable's .nv_fatbin against
// kernels with known signatures (int, char, short, long long, double, pointers, a 12-byte, a 32-byte,
// a 1 KiB, 4 KiB and 20 KB struct by value); cuobjdump is not installed here, readelf and a decoder
// script were used instead.
//
// Fatbin image: header {u32 magic 0xBA55ED50, u16 version 1, u16 headerSize 16, u64 fatSize}, then
// entries back to back until headerSize + fatSize, each a header followed by its payload:
//   +0  u16 kind            1 = PTX, 2 = ELF cubin
//   +2  u16 version         0x0101
//   +4  u32 headerSize      64 for cubins, 80 for PTX (sm_100+ cubins: 112, from public notes)
//   +8  u64 payloadSize     bytes after the entry header, up to the next entry
//   +16 u32 compressedSize  0 when not compressed
//   +24 u16 minor, +26 u16 major  code version (cubin 1.8, PTX ISA 9.0)
//   +28 u32 arch            90 for sm_90
//   +40 u64 flags           0x1 64-bit, 0x10 Linux host, 0x8000 zstd-compressed (payload starts
//                           28 b5 2f fd), 0x2000 compressed by older toolkits
//   +56 u64 uncompressedSize (compressed entries)
// nvcc 13.0 compresses PTX entries by default but not cubins (seen up to a 4 MB cubin); with
// `-Xfatbin -compress-all` cubins are compressed too and their layout cannot be read here.
//
// Cubin: ELF64 LSB. For each kernel, a section `.nv.info.<mangled name>` (type 0x70000000) holds
// attributes {u8 format, u8 attribute, ...}: formats 1 (no value), 2 (byte), 3 (u16) take 4 bytes
// {fmt, attr, u16 value}; format 4 is {fmt, attr, u16 size, size bytes}. Those used:
//   0x17 EIATTR_KPARAM_INFO (format 4, 12 bytes): u32 index (0), u16 ordinal, u16 offset,
//        u32 flags; the parameter's size is (flags >> 18) & 0x3fff bytes (low bits 0x1f000 seen
//        throughout). One record per parameter, emitted in descending ordinal order.
//   0x19 EIATTR_CBANK_PARAM_SIZE (format 3): the parameter block's size in bytes.
//   0x0a EIATTR_PARAM_CBANK (format 4, 8 bytes): u32 section index of .nv.constant0, u16 offset of
//        the block in bank 0 (0x210 on sm_90), u16 its size.
// A kernel without parameters has the section but neither record. Above a parameter block of about
// 4.3 KiB (4,200-byte struct: records present; 4,400: absent) nvcc 13.0 writes only the sizes.
#include "cubin_layout.hpp"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string_view>

#include "flyt/api/fatbin.hpp"

namespace flyt::backend {
namespace {

constexpr std::uint16_t kEntryElf = 2;
constexpr std::uint32_t kEntryHeaderMin = 64;
constexpr std::uint64_t kFlagCompressedOld = 0x2000;
constexpr std::uint64_t kFlagCompressedZstd = 0x8000;

constexpr std::size_t kElfHeaderBytes = 64;
constexpr std::size_t kSectionHeaderBytes = 64;
constexpr std::string_view kInfoPrefix = ".nv.info.";

constexpr std::uint8_t kFormatSized = 4;
constexpr std::uint8_t kAttrKparamInfo = 0x17;
constexpr std::uint8_t kAttrCbankParamSize = 0x19;
constexpr std::uint8_t kAttrParamCbank = 0x0a;
// The driver's limit on a parameter block (CUDA 12.1+).
constexpr std::uint32_t kMaxParamBytes = 32764;

// Bounds-checked little-endian reads from a span (the host is little-endian, as the formats).
class Bytes {
 public:
  explicit Bytes(std::span<const std::byte> bytes) : m_bytes(bytes) {}
  template <class T> [[nodiscard]] std::optional<T> get(std::uint64_t offset) const {
    if (offset > m_bytes.size() || sizeof(T) > m_bytes.size() - offset) return std::nullopt;
    T value;
    std::memcpy(&value, m_bytes.data() + offset, sizeof value);
    return value;
  }
  // [offset, offset + length), or nullopt when it is not inside.
  [[nodiscard]] std::optional<std::span<const std::byte>> range(std::uint64_t offset, std::uint64_t length) const {
    if (offset > m_bytes.size() || length > m_bytes.size() - offset) return std::nullopt;
    return m_bytes.subspan(offset, length);
  }
  [[nodiscard]] std::size_t size() const { return m_bytes.size(); }

 private:
  std::span<const std::byte> m_bytes;
};

struct Section {
  std::uint32_t name = 0;
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
};

std::expected<Section, CubinLayoutError> sectionHeader(const Bytes& elf, std::uint64_t at) {
  auto name = elf.get<std::uint32_t>(at);
  auto offset = elf.get<std::uint64_t>(at + 24);
  auto size = elf.get<std::uint64_t>(at + 32);
  if (!name || !offset || !size) return std::unexpected(CubinLayoutError::kTruncated);
  return Section{*name, *offset, *size};
}

// A section's bytes. Only sections that are read are checked: NOBITS ones (.nv.shared.*) have a
// size but no bytes in the file.
std::expected<std::span<const std::byte>, CubinLayoutError> sectionBytes(const Bytes& elf, const Section& section) {
  auto bytes = elf.range(section.offset, section.size);
  if (!bytes) return std::unexpected(CubinLayoutError::kTruncated);
  return *bytes;
}

// The NUL-terminated name at `offset` in the section-name table, or nullopt.
std::optional<std::string_view> sectionName(std::span<const std::byte> names, std::uint32_t offset) {
  if (offset >= names.size()) return std::nullopt;
  const auto* begin = reinterpret_cast<const char*>(names.data()) + offset;
  const auto* end = static_cast<const char*>(std::memchr(begin, '\0', names.size() - offset));
  if (end == nullptr) return std::nullopt;
  return std::string_view(begin, static_cast<std::size_t>(end - begin));
}

struct ParamRecord {
  std::uint16_t ordinal;
  Executor::ParamLayout layout;
};

// One kernel's .nv.info section.
std::expected<KernelLayout, CubinLayoutError> kernelLayout(std::span<const std::byte> info) {
  const Bytes bytes(info);
  std::vector<ParamRecord> records;
  std::optional<std::uint32_t> blockBytes;
  std::uint64_t at = 0;
  while (at < info.size()) {
    auto format = bytes.get<std::uint8_t>(at);
    auto attribute = bytes.get<std::uint8_t>(at + 1);
    auto value = bytes.get<std::uint16_t>(at + 2);
    if (!format || !attribute || !value) return std::unexpected(CubinLayoutError::kTruncated);
    if (*format == 0 || *format > kFormatSized) return std::unexpected(CubinLayoutError::kBadRecord);
    if (*format != kFormatSized) {
      if (*attribute == kAttrCbankParamSize) blockBytes = *value;
      at += 4;
      continue;
    }
    auto payload = bytes.range(at + 4, *value);
    if (!payload) return std::unexpected(CubinLayoutError::kTruncated);
    const Bytes record(*payload);
    if (*attribute == kAttrKparamInfo) {
      auto ordinal = record.get<std::uint16_t>(4);
      auto offset = record.get<std::uint16_t>(6);
      auto flags = record.get<std::uint32_t>(8);
      if (*value != 12 || !ordinal || !offset || !flags) return std::unexpected(CubinLayoutError::kBadRecord);
      records.push_back({*ordinal, {*offset, (*flags >> 18) & 0x3fff}});
    } else if (*attribute == kAttrParamCbank) {
      auto size = record.get<std::uint16_t>(6);
      if (*value != 8 || !size) return std::unexpected(CubinLayoutError::kBadRecord);
      if (blockBytes && *blockBytes != *size) return std::unexpected(CubinLayoutError::kBadRecord);
      blockBytes = *size;
    }
    at += 4 + std::uint64_t{*value};
  }

  KernelLayout layout;
  std::ranges::sort(records, {}, &ParamRecord::ordinal);
  std::uint32_t end = 0;
  for (std::size_t i = 0; i < records.size(); ++i) {
    const auto& param = records[i].layout;
    // Ordinals 0..n-1, each once; every parameter inside the driver's limit.
    if (records[i].ordinal != i || param.size == 0 || param.offset + param.size > kMaxParamBytes) {
      return std::unexpected(CubinLayoutError::kBadRecord);
    }
    end = std::max(end, param.offset + param.size);
    layout.params.push_back(param);
  }
  if (blockBytes && (*blockBytes > kMaxParamBytes || end > *blockBytes)) {
    return std::unexpected(CubinLayoutError::kBadRecord);
  }
  layout.paramBytes = blockBytes.value_or(end);
  layout.complete = !records.empty() || layout.paramBytes == 0;
  return layout;
}

}  // namespace

const char* describe(CubinLayoutError error) noexcept {
  switch (error) {
    case CubinLayoutError::kTruncated: return "cubin: a header, table or record runs past its bytes";
    case CubinLayoutError::kBadMagic: return "cubin: bad fatbin or ELF magic";
    case CubinLayoutError::kBadElf: return "cubin: not a 64-bit little-endian ELF with a consistent section table";
    case CubinLayoutError::kBadRecord: return "cubin: malformed .nv.info attribute";
    case CubinLayoutError::kNoCubin: return "fatbin holds no cubin (PTX only): layout unknown";
    case CubinLayoutError::kCompressed: return "compressed cubin: layout unknown";
  }
  return "cubin: malformed";
}

std::expected<KernelLayouts, CubinLayoutError> cubinKernelLayouts(std::span<const std::byte> elf) {
  const Bytes bytes(elf);
  if (elf.size() < kElfHeaderBytes) return std::unexpected(CubinLayoutError::kTruncated);
  constexpr unsigned char kIdent[6] = {0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* little-endian */};
  if (std::memcmp(elf.data(), kIdent, 4) != 0) return std::unexpected(CubinLayoutError::kBadMagic);
  if (std::memcmp(elf.data(), kIdent, sizeof kIdent) != 0) return std::unexpected(CubinLayoutError::kBadElf);
  const auto tableAt = *bytes.get<std::uint64_t>(0x28);
  const auto entryBytes = *bytes.get<std::uint16_t>(0x3a);
  const auto count = *bytes.get<std::uint16_t>(0x3c);
  const auto namesIndex = *bytes.get<std::uint16_t>(0x3e);
  if (entryBytes != kSectionHeaderBytes || count == 0 || namesIndex >= count) {
    return std::unexpected(CubinLayoutError::kBadElf);
  }
  if (!bytes.range(tableAt, std::uint64_t{count} * kSectionHeaderBytes)) {
    return std::unexpected(CubinLayoutError::kTruncated);
  }
  auto namesHeader = sectionHeader(bytes, tableAt + std::uint64_t{namesIndex} * kSectionHeaderBytes);
  if (!namesHeader) return std::unexpected(namesHeader.error());
  const auto names = sectionBytes(bytes, *namesHeader);
  if (!names) return std::unexpected(names.error());

  KernelLayouts layouts;
  for (std::uint16_t i = 0; i < count; ++i) {
    auto section = sectionHeader(bytes, tableAt + std::uint64_t{i} * kSectionHeaderBytes);
    if (!section) return std::unexpected(section.error());
    auto name = sectionName(*names, section->name);
    if (!name) return std::unexpected(CubinLayoutError::kBadElf);
    if (!name->starts_with(kInfoPrefix) || name->size() == kInfoPrefix.size()) continue;
    auto info = sectionBytes(bytes, *section);
    if (!info) return std::unexpected(info.error());
    auto layout = kernelLayout(*info);
    if (!layout) return std::unexpected(layout.error());
    layouts.emplace(std::string(name->substr(kInfoPrefix.size())), std::move(*layout));
  }
  return layouts;
}

namespace {

// Calls `use` on every uncompressed cubin of a fatbin image, in order; kNoCubin or kCompressed when
// there is none.
template <class Use>
std::expected<void, CubinLayoutError> forEachCubin(std::span<const std::byte> image, Use&& use) {
  auto total = api::fatbinImageBytes(image.data(), image.size());
  if (!total) {
    return std::unexpected(total.error() == api::FatbinError::kImageMagic ? CubinLayoutError::kBadMagic
                                                                          : CubinLayoutError::kTruncated);
  }
  const Bytes bytes(image.first(*total));
  std::uint64_t at = *bytes.get<std::uint16_t>(6);  // the fatbin header's size
  bool sawCubin = false;
  bool sawCompressed = false;
  while (at < bytes.size()) {
    auto kind = bytes.get<std::uint16_t>(at);
    auto headerBytes = bytes.get<std::uint32_t>(at + 4);
    auto payloadBytes = bytes.get<std::uint64_t>(at + 8);
    auto flags = bytes.get<std::uint64_t>(at + 40);
    if (!kind || !headerBytes || !payloadBytes || !flags) return std::unexpected(CubinLayoutError::kTruncated);
    if (*headerBytes < kEntryHeaderMin) return std::unexpected(CubinLayoutError::kBadRecord);
    auto payload = bytes.range(at + *headerBytes, *payloadBytes);
    if (!payload) return std::unexpected(CubinLayoutError::kTruncated);
    at += *headerBytes + *payloadBytes;
    if (*kind != kEntryElf) continue;  // PTX, or a kind not verified here
    if ((*flags & (kFlagCompressedOld | kFlagCompressedZstd)) != 0) {
      sawCompressed = true;
      continue;
    }
    sawCubin = true;
    if (auto used = use(*payload); !used) return used;
  }
  if (!sawCubin) return std::unexpected(sawCompressed ? CubinLayoutError::kCompressed : CubinLayoutError::kNoCubin);
  return {};
}

}  // namespace

std::expected<KernelLayouts, CubinLayoutError> fatbinKernelLayouts(std::span<const std::byte> image) {
  KernelLayouts layouts;
  auto walked = forEachCubin(image, [&](std::span<const std::byte> cubin) -> std::expected<void, CubinLayoutError> {
    auto kernels = cubinKernelLayouts(cubin);
    if (!kernels) return std::unexpected(kernels.error());
    layouts.merge(*kernels);  // keeps the first cubin's layout of a kernel
    return {};
  });
  if (!walked) return std::unexpected(walked.error());
  return layouts;
}

std::expected<GlobalSizes, CubinLayoutError> cubinGlobals(std::span<const std::byte> elf) {
  constexpr std::uint32_t kSymtab = 2;
  constexpr std::uint8_t kObject = 1;
  constexpr std::uint64_t kSymbolBytes = 24;
  const Bytes bytes(elf);
  if (elf.size() < kElfHeaderBytes || std::memcmp(elf.data(), "\x7f" "ELF", 4) != 0) {
    return std::unexpected(CubinLayoutError::kBadMagic);
  }
  const auto tableAt = *bytes.get<std::uint64_t>(0x28);
  const auto count = *bytes.get<std::uint16_t>(0x3c);
  if (*bytes.get<std::uint16_t>(0x3a) != kSectionHeaderBytes) return std::unexpected(CubinLayoutError::kBadElf);
  GlobalSizes globals;
  for (std::uint16_t i = 0; i < count; ++i) {
    const std::uint64_t header = tableAt + std::uint64_t{i} * kSectionHeaderBytes;
    auto type = bytes.get<std::uint32_t>(header + 4);
    auto link = bytes.get<std::uint32_t>(header + 40);
    if (!type || !link) return std::unexpected(CubinLayoutError::kTruncated);
    if (*type != kSymtab) continue;
    auto symbols = sectionHeader(bytes, header);
    if (!symbols || *link >= count) return std::unexpected(CubinLayoutError::kBadElf);
    auto strings = sectionHeader(bytes, tableAt + std::uint64_t{*link} * kSectionHeaderBytes);
    if (!strings) return std::unexpected(strings.error());
    auto names = sectionBytes(bytes, *strings);
    auto table = sectionBytes(bytes, *symbols);
    if (!names || !table) return std::unexpected(CubinLayoutError::kTruncated);
    const Bytes entries(*table);
    for (std::uint64_t at = 0; at + kSymbolBytes <= entries.size(); at += kSymbolBytes) {
      const auto name = *entries.get<std::uint32_t>(at);
      const auto info = *entries.get<std::uint8_t>(at + 4);
      const auto size = *entries.get<std::uint64_t>(at + 16);
      if ((info & 0xf) != kObject || size == 0) continue;
      if (auto text = sectionName(*names, name); text && !text->empty()) globals.emplace(std::string(*text), size);
    }
  }
  return globals;
}

std::expected<GlobalSizes, CubinLayoutError> fatbinGlobals(std::span<const std::byte> image) {
  GlobalSizes globals;
  auto walked = forEachCubin(image, [&](std::span<const std::byte> cubin) -> std::expected<void, CubinLayoutError> {
    auto found = cubinGlobals(cubin);
    if (!found) return std::unexpected(found.error());
    globals.merge(*found);
    return {};
  });
  if (!walked) return std::unexpected(walked.error());
  return globals;
}

}  // namespace flyt::backend
