// The generated method table (flyt/api/methods.hpp) agrees with its X-macros and is indexed by id.
#include <flyt/api/methods.hpp>

#include <gtest/gtest.h>

#include <set>
#include <string_view>

namespace flyt::api {
namespace {

#define FLYT_CHECK_ROW(fn, id, k, h)                                                     \
  static_assert(methodInfo(static_cast<std::uint32_t>(id)) == &methodInfo(Method::fn)); \
  static_assert(methodInfo(Method::fn).name == std::string_view(#fn));                  \
  static_assert(methodInfo(Method::fn).kind == Kind::k);                                \
  static_assert(methodInfo(Method::fn).handler == Handler::h);
FLYT_API_METHODS(FLYT_CHECK_ROW)
#undef FLYT_CHECK_ROW

TEST(ApiMethods, EveryIdFindsItsRowAndUnknownIdsFindNone) {
  std::set<std::uint32_t> ids;
#define FLYT_COLLECT(fn, id, k, h) ids.insert(id);
  FLYT_API_METHODS(FLYT_COLLECT)
#undef FLYT_COLLECT
  EXPECT_EQ(ids.size(), kMethodCount);
  EXPECT_EQ(methodInfo(0u), nullptr);
  EXPECT_EQ(methodInfo(kMethodIdLimit), nullptr);
  for (std::uint32_t id = 0; id < kMethodIdLimit; ++id) EXPECT_EQ(methodInfo(id) != nullptr, ids.contains(id)) << id;
}

TEST(ApiMethods, KnowsArgumentCountsAndPerThreadVariantsFromTheToml) {
  EXPECT_EQ(methodInfo(Method::cudaMemcpy).argCount, 4);
  EXPECT_EQ(methodInfo(Method::__cudaRegisterFunction).argCount, 10);
  EXPECT_EQ(methodInfo(Method::cudaGetErrorString).kind, Kind::Local);
  std::set<std::string_view> variants;
#define FLYT_VARIANT(exported, base, stream) variants.insert(#exported);
  FLYT_API_PER_THREAD_VARIANTS(FLYT_VARIANT)
#undef FLYT_VARIANT
  EXPECT_TRUE(variants.contains("cudaMemcpy_ptds"));
  EXPECT_TRUE(variants.contains("cudaLaunchKernel_ptsz"));
}

}  // namespace
}  // namespace flyt::api
