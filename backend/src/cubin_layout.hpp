// Kernel parameter layouts read from the cubins inside a fatbin image, without a driver: what the
// GPU stand-in answers where CudaExecutor asks cuKernelGetParamInfo. The formats, as verified on
// nvcc 13.0.88 output, are described at the top of cubin_layout.cpp.
//
// The image is client-supplied bytes: every field is bounds-checked, and a malformed image is an
// error, never a crash or a read outside the span.
#pragma once

#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "flyt/backend/executor.hpp"

namespace flyt::backend {

enum class CubinLayoutError {
  kTruncated,   // a header, table or record runs past the bytes it lives in
  kBadMagic,    // the fatbin or an ELF entry's magic is wrong
  kBadElf,      // not a 64-bit little-endian ELF, or its section table is inconsistent
  kBadRecord,   // an .nv.info attribute that does not parse or contradicts the others
  kNoCubin,     // the fatbin holds no cubin (PTX only)
  kCompressed,  // every cubin in the fatbin is compressed
};

[[nodiscard]] const char* describe(CubinLayoutError error) noexcept;

struct KernelLayout {
  std::vector<Executor::ParamLayout> params;  // in ordinal order
  std::uint32_t paramBytes = 0;               // size of the parameter block (EIATTR_CBANK_PARAM_SIZE)
  // False when the cubin gives the block's size but no per-parameter records (nvcc 13.0 omits them
  // for parameter blocks above about 4.3 KiB): the layout is then unknown.
  bool complete = true;
};

// Mangled kernel name -> layout.
using KernelLayouts = std::map<std::string, KernelLayout, std::less<>>;

// The kernels of one ELF cubin (the sections `.nv.info.<name>`).
[[nodiscard]] std::expected<KernelLayouts, CubinLayoutError> cubinKernelLayouts(std::span<const std::byte> elf);

// The kernels of every uncompressed cubin in a fatbin image (flyt/api/fatbin.hpp); a kernel present
// in several cubins (one per architecture) takes its layout from the first. Compressed cubins are
// skipped; if nothing but compressed cubins is found the answer is kCompressed.
[[nodiscard]] std::expected<KernelLayouts, CubinLayoutError> fatbinKernelLayouts(std::span<const std::byte> image);

// Name -> size in bytes of every variable (__device__, __constant__: STT_OBJECT symbols) of one
// ELF cubin, and of every uncompressed cubin of a fatbin (the first cubin's size of a name wins).
using GlobalSizes = std::map<std::string, std::uint64_t, std::less<>>;
[[nodiscard]] std::expected<GlobalSizes, CubinLayoutError> cubinGlobals(std::span<const std::byte> elf);
[[nodiscard]] std::expected<GlobalSizes, CubinLayoutError> fatbinGlobals(std::span<const std::byte> image);

}  // namespace flyt::backend
