// The fatbin wrapper and image checks that __cudaRegisterFatBinary (client) and the module upload
// (worker) rely on: flyt/api/fatbin.hpp.
#include "flyt/api/fatbin.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace flyt::api {
namespace {

// An image as nvcc lays it out: the 16-byte header, then `fatSize` bytes of entries.
std::vector<std::uint64_t> image(std::uint64_t fatSize, std::uint16_t headerSize = 16,
                                 std::uint32_t magic = kFatbinMagic) {
  std::vector<std::uint64_t> words((headerSize + fatSize + 7) / 8 + 2, 0x5a5a5a5a5a5a5a5aULL);
  FatbinHeader header{magic, 1, headerSize, fatSize};
  std::memcpy(words.data(), &header, sizeof header);
  return words;
}

TEST(Fatbin, ImageSpansHeaderSizePlusFatSizeFromTheWrappersData) {
  const auto words = image(40);
  const FatbinWrapper wrapper{kFatbinWrapperMagic, 1, words.data(), nullptr};
  auto span = fatbinImage(&wrapper);
  ASSERT_TRUE(span.has_value());
  EXPECT_EQ(static_cast<const void*>(span->data()), static_cast<const void*>(words.data()));
  EXPECT_EQ(span->size(), 56u);
}

TEST(Fatbin, LinkedWrapperOfVersionTwoIsAccepted) {
  const auto words = image(8);
  const void* prelinked[] = {nullptr};
  const FatbinWrapper wrapper{kFatbinWrapperMagic, 2, words.data(), prelinked};
  ASSERT_TRUE(fatbinImage(&wrapper).has_value());
  EXPECT_EQ(fatbinImage(&wrapper)->size(), 24u);
}

TEST(Fatbin, MalformedWrappersAreRefusedWithTheirReason) {
  const auto words = image(8);
  EXPECT_EQ(fatbinImage(nullptr).error(), FatbinError::kNullWrapper);
  const FatbinWrapper badMagic{0x12345678, 1, words.data(), nullptr};
  EXPECT_EQ(fatbinImage(&badMagic).error(), FatbinError::kWrapperMagic);
  const FatbinWrapper badVersion{kFatbinWrapperMagic, 3, words.data(), nullptr};
  EXPECT_EQ(fatbinImage(&badVersion).error(), FatbinError::kWrapperVersion);
  const FatbinWrapper noImage{kFatbinWrapperMagic, 1, nullptr, nullptr};
  EXPECT_EQ(fatbinImage(&noImage).error(), FatbinError::kNullImage);
  const auto notFatbin = image(8, 16, 0xdeadbeef);
  const FatbinWrapper badImage{kFatbinWrapperMagic, 1, notFatbin.data(), nullptr};
  EXPECT_EQ(fatbinImage(&badImage).error(), FatbinError::kImageMagic);
  EXPECT_STRNE(describe(FatbinError::kImageMagic), describe(FatbinError::kWrapperMagic));
}

TEST(Fatbin, ImplausibleSizesAreRefused) {
  const auto shortHeader = image(8, 8);
  EXPECT_EQ(fatbinImageBytes(shortHeader.data()).error(), FatbinError::kImageSize);
  const auto huge = image(0);
  auto patched = huge;
  FatbinHeader header{kFatbinMagic, 1, 16, kMaxFatbinBytes + 1};
  std::memcpy(patched.data(), &header, sizeof header);
  EXPECT_EQ(fatbinImageBytes(patched.data()).error(), FatbinError::kImageSize);
}

TEST(Fatbin, ReceivedBytesMustHoldTheWholeImage) {
  const auto words = image(40);
  EXPECT_EQ(fatbinImageBytes(words.data(), 56).value(), 56u);
  EXPECT_EQ(fatbinImageBytes(words.data(), 55).error(), FatbinError::kImageSize);
  EXPECT_EQ(fatbinImageBytes(words.data(), 10).error(), FatbinError::kImageSize);
}

TEST(Fatbin, HashIsFnv1aAndDependsOnEveryByte) {
  EXPECT_EQ(fatbinHash({}), 0xcbf29ce484222325ULL);
  const std::byte a[] = {std::byte{'a'}};
  EXPECT_EQ(fatbinHash(a), 0xaf63dc4c8601ec8cULL);  // FNV-1a 64 of "a"
  auto words = image(40);
  const auto* bytes = reinterpret_cast<const std::byte*>(words.data());
  const auto before = fatbinHash({bytes, 56});
  words[5] ^= 1;
  EXPECT_NE(fatbinHash({bytes, 56}), before);
}

}  // namespace
}  // namespace flyt::api
