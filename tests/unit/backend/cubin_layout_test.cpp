#include "cubin_layout.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <string_view>

namespace flyt::backend {
namespace {

using Bytes = std::vector<std::byte>;

Bytes readFile(const char* path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  std::vector<char> chars{std::istreambuf_iterator<char>(in), {}};
  Bytes bytes(chars.size());
  std::memcpy(bytes.data(), chars.data(), chars.size());
  return bytes;
}

template <class T> T get(const Bytes& bytes, std::size_t at) {
  T value;
  std::memcpy(&value, bytes.data() + at, sizeof value);
  return value;
}
template <class T> void put(Bytes& bytes, std::size_t at, T value) { std::memcpy(bytes.data() + at, &value, sizeof value); }

// Where the first cubin of a fatbin (entry kind 2) starts and how long it is.
std::pair<std::size_t, std::size_t> firstCubin(const Bytes& fatbin) {
  std::size_t at = get<std::uint16_t>(fatbin, 6);
  while (at < fatbin.size()) {
    const auto header = get<std::uint32_t>(fatbin, at + 4);
    const auto payload = get<std::uint64_t>(fatbin, at + 8);
    if (get<std::uint16_t>(fatbin, at) == 2) return {at + header, payload};
    at += header + payload;
  }
  ADD_FAILURE() << "no cubin";
  return {0, 0};
}

// The file offset of the section header named `wanted` in the ELF at `elf`.
std::size_t sectionHeaderAt(const Bytes& bytes, std::size_t elf, std::string_view wanted) {
  const auto table = elf + get<std::uint64_t>(bytes, elf + 0x28);
  const auto count = get<std::uint16_t>(bytes, elf + 0x3c);
  const auto namesHeader = table + 64 * get<std::uint16_t>(bytes, elf + 0x3e);
  const auto names = elf + get<std::uint64_t>(bytes, namesHeader + 24);
  for (std::size_t i = 0; i < count; ++i) {
    const auto header = table + 64 * i;
    const char* name = reinterpret_cast<const char*>(bytes.data()) + names + get<std::uint32_t>(bytes, header);
    if (wanted == name) return header;
  }
  ADD_FAILURE() << "no section " << wanted;
  return 0;
}

std::vector<std::pair<std::uint32_t, std::uint32_t>> pairs(const KernelLayout& layout) {
  std::vector<std::pair<std::uint32_t, std::uint32_t>> out;
  for (const auto& p : layout.params) out.emplace_back(p.offset, p.size);
  return out;
}

using Pairs = std::vector<std::pair<std::uint32_t, std::uint32_t>>;

TEST(CubinLayout, ReadsEveryKernelsParametersFromAnNvccFatbinInOrdinalOrder) {
  const auto fatbin = readFile(FLYT_LAYOUT_FATBIN);
  auto layouts = fatbinKernelLayouts(fatbin);
  ASSERT_TRUE(layouts) << describe(layouts.error());
  ASSERT_EQ(layouts->size(), 7u);
  EXPECT_EQ(pairs(layouts->at("_Z4kintiPi")), (Pairs{{0, 4}, {8, 8}}));
  EXPECT_EQ(pairs(layouts->at("_Z5kcharcdPi")), (Pairs{{0, 1}, {8, 8}, {16, 8}}));
  EXPECT_EQ(pairs(layouts->at("_Z4ks123S12cPi")), (Pairs{{0, 12}, {12, 1}, {16, 8}}));
  EXPECT_EQ(pairs(layouts->at("_Z4kbig3BigcPd")), (Pairs{{0, 1024}, {1024, 1}, {1032, 8}}));
  EXPECT_EQ(pairs(layouts->at("_Z7kunusedixsPi")), (Pairs{{0, 4}, {8, 8}, {16, 2}, {24, 8}}));
  EXPECT_EQ(layouts->at("_Z4kbig3BigcPd").paramBytes, 1040u);
  EXPECT_TRUE(layouts->at("_Z4kbig3BigcPd").complete);
}

TEST(CubinLayout, KernelWithoutParametersHasAnEmptyCompleteLayout) {
  auto layouts = fatbinKernelLayouts(readFile(FLYT_LAYOUT_FATBIN));
  ASSERT_TRUE(layouts);
  const auto& none = layouts->at("_Z5knonev");
  EXPECT_TRUE(none.params.empty());
  EXPECT_EQ(none.paramBytes, 0u);
  EXPECT_TRUE(none.complete);
}

TEST(CubinLayout, ParameterBlockWithoutRecordsIsReportedIncomplete) {
  auto layouts = fatbinKernelLayouts(readFile(FLYT_LAYOUT_FATBIN));
  ASSERT_TRUE(layouts);
  const auto& huge = layouts->at("_Z5khuge4HugePi");
  EXPECT_FALSE(huge.complete);
  EXPECT_TRUE(huge.params.empty());
  EXPECT_EQ(huge.paramBytes, 4408u);
}

TEST(CubinLayout, FatbinOfOnlyCompressedCubinsIsReportedCompressed) {
  auto layouts = fatbinKernelLayouts(readFile(FLYT_LAYOUT_FATBIN_COMPRESSED));
  ASSERT_FALSE(layouts);
  EXPECT_EQ(layouts.error(), CubinLayoutError::kCompressed);
  EXPECT_STREQ(describe(layouts.error()), "compressed cubin: layout unknown");
}

TEST(CubinLayout, PtxOnlyFatbinHasNoCubin) {
  auto layouts = fatbinKernelLayouts(readFile(FLYT_LAYOUT_FATBIN_PTX));
  ASSERT_FALSE(layouts);
  EXPECT_EQ(layouts.error(), CubinLayoutError::kNoCubin);
}

TEST(CubinLayout, TruncatedCubinIsAnErrorOrTheSameLayouts) {
  const auto fatbin = readFile(FLYT_LAYOUT_FATBIN);
  const auto [at, size] = firstCubin(fatbin);
  const std::span<const std::byte> cubin(fatbin.data() + at, size);
  const auto full = cubinKernelLayouts(cubin);
  ASSERT_TRUE(full);
  const auto tableEnd = get<std::uint64_t>(fatbin, at + 0x28) + 64 * get<std::uint16_t>(fatbin, at + 0x3c);
  // A prefix without the whole section table is an error; a longer one (program headers follow
  // the table) gives an error or the same layouts, never different ones.
  for (std::size_t n = 0; n < size; ++n) {
    auto prefix = cubinKernelLayouts(cubin.first(n));
    if (n < tableEnd) {
      EXPECT_FALSE(prefix) << n;
    } else if (prefix) {
      EXPECT_EQ(prefix->size(), full->size()) << n;
      for (const auto& [name, layout] : *full) EXPECT_EQ(pairs(prefix->at(name)), pairs(layout)) << n;
    }
  }
}

TEST(CubinLayout, TruncatedFatbinIsAnError) {
  const auto fatbin = readFile(FLYT_LAYOUT_FATBIN);
  for (std::size_t n : {0ul, 8ul, 16ul, 40ul, fatbin.size() / 2, fatbin.size() - 1}) {
    auto layouts = fatbinKernelLayouts(std::span(fatbin).first(n));
    ASSERT_FALSE(layouts) << n;
    EXPECT_EQ(layouts.error(), CubinLayoutError::kTruncated) << n;
  }
}

TEST(CubinLayout, BadFatbinOrElfMagicIsAnError) {
  auto fatbin = readFile(FLYT_LAYOUT_FATBIN);
  auto badFatbin = fatbin;
  put<std::uint32_t>(badFatbin, 0, 0x12345678);
  EXPECT_EQ(fatbinKernelLayouts(badFatbin).error(), CubinLayoutError::kBadMagic);
  put<std::uint8_t>(fatbin, firstCubin(fatbin).first + 1, 'X');
  EXPECT_EQ(fatbinKernelLayouts(fatbin).error(), CubinLayoutError::kBadMagic);
}

TEST(CubinLayout, EntryPayloadPastTheImageIsAnError) {
  auto fatbin = readFile(FLYT_LAYOUT_FATBIN);
  put<std::uint64_t>(fatbin, 16 + 8, ~std::uint64_t{0} - 32);
  EXPECT_EQ(fatbinKernelLayouts(fatbin).error(), CubinLayoutError::kTruncated);
}

TEST(CubinLayout, SectionOffsetOutOfRangeIsAnError) {
  auto fatbin = readFile(FLYT_LAYOUT_FATBIN);
  const auto elf = firstCubin(fatbin).first;
  const auto header = sectionHeaderAt(fatbin, elf, ".nv.info._Z4kintiPi");
  auto far = fatbin;
  put<std::uint64_t>(far, header + 24, 0xffffffff00ULL);
  EXPECT_EQ(fatbinKernelLayouts(far).error(), CubinLayoutError::kTruncated);
  auto wrapping = fatbin;
  put<std::uint64_t>(wrapping, header + 24, 16);
  put<std::uint64_t>(wrapping, header + 32, ~std::uint64_t{0});
  EXPECT_EQ(fatbinKernelLayouts(wrapping).error(), CubinLayoutError::kTruncated);
}

TEST(CubinLayout, AbsurdSectionCountOrNameIsAnError) {
  auto fatbin = readFile(FLYT_LAYOUT_FATBIN);
  const auto elf = firstCubin(fatbin).first;
  auto many = fatbin;
  put<std::uint16_t>(many, elf + 0x3c, 0xffff);
  put<std::uint16_t>(many, elf + 0x3e, 1);
  EXPECT_EQ(fatbinKernelLayouts(many).error(), CubinLayoutError::kTruncated);
  auto names = fatbin;
  put<std::uint16_t>(names, elf + 0x3e, 0xfff0);
  EXPECT_EQ(fatbinKernelLayouts(names).error(), CubinLayoutError::kBadElf);
  auto name = fatbin;
  put<std::uint32_t>(name, sectionHeaderAt(fatbin, elf, ".nv.info._Z4kintiPi"), 0x7fffffff);
  EXPECT_EQ(fatbinKernelLayouts(name).error(), CubinLayoutError::kBadElf);
}

TEST(CubinLayout, AbsurdParameterRecordIsAnError) {
  auto fatbin = readFile(FLYT_LAYOUT_FATBIN);
  const auto elf = firstCubin(fatbin).first;
  const auto header = sectionHeaderAt(fatbin, elf, ".nv.info._Z4kintiPi");
  const auto info = elf + get<std::uint64_t>(fatbin, header + 24);
  const auto infoBytes = get<std::uint64_t>(fatbin, header + 32);
  std::size_t record = 0;  // the first EIATTR_KPARAM_INFO {04 17 0c 00}
  for (std::size_t at = info; at + 4 <= info + infoBytes; at += 4) {
    if (get<std::uint32_t>(fatbin, at) == 0x000c1704) {
      record = at;
      break;
    }
  }
  ASSERT_NE(record, 0u);

  auto beyond = fatbin;  // offset 0xffff, size 0x3fff: past the driver's parameter limit
  put<std::uint16_t>(beyond, record + 10, 0xffff);
  put<std::uint32_t>(beyond, record + 12, 0xffffffffu);
  EXPECT_EQ(fatbinKernelLayouts(beyond).error(), CubinLayoutError::kBadRecord);
  auto duplicate = fatbin;  // both records claim ordinal 0
  put<std::uint16_t>(duplicate, record + 8, get<std::uint16_t>(fatbin, record + 8) == 0 ? 1 : 0);
  EXPECT_EQ(fatbinKernelLayouts(duplicate).error(), CubinLayoutError::kBadRecord);
  auto longRecord = fatbin;  // a record size running past the section
  put<std::uint16_t>(longRecord, record + 2, 0xfff0);
  EXPECT_EQ(fatbinKernelLayouts(longRecord).error(), CubinLayoutError::kTruncated);
  auto format = fatbin;
  put<std::uint8_t>(format, record, 9);
  EXPECT_EQ(fatbinKernelLayouts(format).error(), CubinLayoutError::kBadRecord);
}

}  // namespace
}  // namespace flyt::backend
