// Token hashing and comparison, random tokens and session ids, and the size units tokens share a
// file with nothing but their smallness.
#include <gtest/gtest.h>

#include <set>

#include "flyt/orchestration/token.hpp"
#include "flyt/transport/units.hpp"

namespace fo = flyt::orchestration;

TEST(Token, HashIsTheSha256HexOfTheToken) {
  EXPECT_EQ(fo::hashToken("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(fo::hashToken("abc").size(), 64u);
}

TEST(Token, OnlyEqualHashesCompareEqual) {
  const auto a = fo::hashToken("secret-one");
  EXPECT_TRUE(fo::tokenHashesEqual(a, fo::hashToken("secret-one")));
  EXPECT_FALSE(fo::tokenHashesEqual(a, fo::hashToken("secret-two")));
  EXPECT_FALSE(fo::tokenHashesEqual(a, a.substr(1)));
  EXPECT_FALSE(fo::tokenHashesEqual("", ""));
}

TEST(Token, RandomTokensAreThirtyTwoHexCharactersAndDiffer) {
  const auto a = fo::randomToken().value();
  const auto b = fo::randomToken().value();
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(a, b);
}

TEST(Token, SessionIdsAreNonZeroAndDiffer) {
  std::set<std::uint64_t> ids;
  for (int i = 0; i < 100; ++i) ids.insert(fo::randomSessionId().value());
  EXPECT_EQ(ids.size(), 100u);
  EXPECT_FALSE(ids.contains(0));
}

TEST(Units, ParsesBinaryAndDecimalUnitsAndPlainBytes) {
  EXPECT_EQ(flyt::transport::parseSize("8GiB").value(), 8ULL << 30);
  EXPECT_EQ(flyt::transport::parseSize("512MiB").value(), 512ULL << 20);
  EXPECT_EQ(flyt::transport::parseSize("1.5GB").value(), 1'500'000'000ULL);
  EXPECT_EQ(flyt::transport::parseSize("1.5 gib").value(), 3ULL << 29);
  EXPECT_EQ(flyt::transport::parseSize("1048576").value(), 1048576ULL);
}

TEST(Units, RefusesWhatIsNotASize) {
  for (const char* text : {"", "GiB", "8 parsecs", "1.5", "-1GiB", "99999999999999999999"}) {
    auto size = flyt::transport::parseSize(text);
    ASSERT_FALSE(size) << text;
    EXPECT_NE(size.error().message.find("is not a size"), std::string::npos);
  }
}

TEST(Units, FormatsWithOneDecimalInTheLargestUnit) {
  EXPECT_EQ(flyt::transport::formatBytes(100), "100 B");
  EXPECT_EQ(flyt::transport::formatBytes(8ULL << 30), "8.0 GiB");
  EXPECT_EQ(flyt::transport::formatBytes(512ULL << 20), "512.0 MiB");
  EXPECT_EQ(flyt::transport::formatBytes(150'118'572'032ULL), "139.8 GiB");
}
