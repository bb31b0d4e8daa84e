// Flyt's libcuda.so.1 as the dynamic loader and NVIDIA's runtime see it, without a session: its
// soname and exports, cuGetProcAddress's table and cuGetExportTable's answers (all answered in
// the process). The calls through a node are tests/driver's.
#include "process.hpp"

#include <cuda.h>
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace flyt::test {
namespace {

const std::filesystem::path kLibrary = FLYT_CUDA_PATH;

class DriverLibrary : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    s_handle = ::dlopen(kLibrary.c_str(), RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(s_handle, nullptr) << ::dlerror();
  }
  template <class Fn>
  static Fn symbol(const char* name) {
    return reinterpret_cast<Fn>(::dlsym(s_handle, name));
  }
  static CUresult procAddress(const char* name, void** fn, int version, cuuint64_t flags,
                              CUdriverProcAddressQueryResult* status) {
    using Lookup = CUresult (*)(const char*, void**, int, cuuint64_t, CUdriverProcAddressQueryResult*);
    return symbol<Lookup>("cuGetProcAddress_v2")(name, fn, version, flags, status);
  }
  static inline void* s_handle = nullptr;
};

std::set<std::string> definedFunctions() {
  const auto result = runProcess({FLYT_READELF, "--dyn-syms", "-W", kLibrary.string()}, environmentWith({}));
  EXPECT_EQ(result.exitCode, 0) << result.err;
  std::set<std::string> names;
  std::istringstream in(result.out);
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    const std::vector<std::string> f{std::istream_iterator<std::string>(fields), {}};
    if (f.size() < 8 || f[0].back() != ':' || f[6] == "UND" || f[6] == "Ndx") continue;
    names.insert(f[3] == "FUNC" ? f[7] : f[3] + " " + f[7]);
  }
  return names;
}

TEST_F(DriverLibrary, HasTheSonameOfNvidiasDriverAndNeedsNoCudaLibrary) {
  const auto result = runProcess({FLYT_READELF, "-d", kLibrary.string()}, environmentWith({}));
  ASSERT_EQ(result.exitCode, 0) << result.err;
  EXPECT_NE(result.out.find("Library soname: [libcuda.so.1]"), std::string::npos) << result.out;
  EXPECT_EQ(result.out.find("Shared library: [libcud"), std::string::npos) << result.out;
}

TEST_F(DriverLibrary, ExportsExactlyTheDriversFunctions) {
  std::set<std::string> expected;
  std::ifstream exports(FLYT_CUDA_EXPORTS_PATH);
  ASSERT_TRUE(exports) << FLYT_CUDA_EXPORTS_PATH;
  for (std::string line; std::getline(exports, line);) {
    if (!line.empty() && line[0] != '#') expected.insert(line);
  }
  ASSERT_GT(expected.size(), 600u);
  const auto actual = definedFunctions();
  std::set<std::string> missing, extra;
  std::ranges::set_difference(expected, actual, std::inserter(missing, missing.end()));
  std::ranges::set_difference(actual, expected, std::inserter(extra, extra.end()));
  EXPECT_TRUE(missing.empty()) << missing.size() << " missing, e.g. " << (missing.empty() ? "" : *missing.begin());
  EXPECT_TRUE(extra.empty()) << extra.size() << " extra, e.g. " << (extra.empty() ? "" : *extra.begin());
}

TEST_F(DriverLibrary, ProcAddressPicksTheVariantOfTheRequestedVersionAndStream) {
  void* fn = nullptr;
  CUdriverProcAddressQueryResult status{};
  ASSERT_EQ(procAddress("cuMemAlloc", &fn, 12000, 0, &status), CUDA_SUCCESS);
  EXPECT_EQ(fn, ::dlsym(s_handle, "cuMemAlloc_v2"));
  EXPECT_EQ(status, CU_GET_PROC_ADDRESS_SUCCESS);
  ASSERT_EQ(procAddress("cuMemAlloc", &fn, 3010, 0, &status), CUDA_SUCCESS);
  EXPECT_EQ(fn, ::dlsym(s_handle, "cuMemAlloc"));
  ASSERT_EQ(procAddress("cuLaunchKernel", &fn, 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, &status), CUDA_SUCCESS);
  EXPECT_EQ(fn, ::dlsym(s_handle, "cuLaunchKernel_ptsz"));
  // A function without a per-thread variant answers its only one.
  ASSERT_EQ(procAddress("cuInit", &fn, 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, &status), CUDA_SUCCESS);
  EXPECT_EQ(fn, ::dlsym(s_handle, "cuInit"));
  // cuGetProcAddress asked for itself at CUDA 12+ is the 5-argument ABI.
  ASSERT_EQ(procAddress("cuGetProcAddress", &fn, 12000, 0, nullptr), CUDA_SUCCESS);
  EXPECT_EQ(fn, ::dlsym(s_handle, "cuGetProcAddress_v2"));
}

TEST_F(DriverLibrary, ProcAddressOfUnknownOrTooNewNamesFailsCleanly) {
  void* fn = &fn;
  CUdriverProcAddressQueryResult status{};
  EXPECT_EQ(procAddress("cuNotAFunction", &fn, 13000, 0, &status), CUDA_ERROR_NOT_FOUND);
  EXPECT_EQ(fn, nullptr);
  EXPECT_EQ(status, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
  EXPECT_EQ(procAddress("cuLibraryLoadData", &fn, 11080, 0, &status), CUDA_ERROR_NOT_FOUND);
  EXPECT_EQ(status, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
  // cuBLAS asks for "" with a null pfn; NVIDIA's runtime passes a null status.
  EXPECT_EQ(procAddress("", nullptr, 0, 0, nullptr), CUDA_ERROR_NOT_FOUND);
  EXPECT_EQ(procAddress("cuNotAFunction", &fn, 13000, 0, nullptr), CUDA_ERROR_NOT_FOUND);
}

TEST_F(DriverLibrary, EveryProcTableEntryIsAnExport) {
  std::ifstream exports(FLYT_CUDA_EXPORTS_PATH);
  int resolved = 0;
  for (std::string name; std::getline(exports, name);) {
    if (name.empty() || name[0] == '#' || name.find('_') != std::string::npos) continue;  // base names only
    void* fn = nullptr;
    if (procAddress(name.c_str(), &fn, 13000, 0, nullptr) == CUDA_SUCCESS) {
      Dl_info info{};
      ASSERT_NE(::dladdr(fn, &info), 0) << name;
      ASSERT_STREQ(info.dli_fname, std::filesystem::canonical(kLibrary).c_str()) << name;
      ++resolved;
    }
  }
  EXPECT_GT(resolved, 300);
}

TEST_F(DriverLibrary, ExportTablesAreStableAndUnknownOnesRefused) {
  using GetTable = CUresult (*)(const void**, const CUuuid*);
  auto getTable = symbol<GetTable>("cuGetExportTable");
  const unsigned char runtimeInterface[16] = {0x6b, 0xd5, 0xfb, 0x6c, 0x5b, 0xf4, 0xe7, 0x4a,
                                              0x89, 0x87, 0xd9, 0x39, 0x12, 0xfd, 0x9d, 0xf9};
  const unsigned char contextStorage[16] = {0xc6, 0x93, 0x33, 0x6e, 0x11, 0x21, 0xdf, 0x11,
                                            0xa8, 0xc3, 0x68, 0xf3, 0x55, 0xd8, 0x95, 0x93};
  CUuuid id;
  std::memcpy(id.bytes, runtimeInterface, 16);
  const void* first = nullptr;
  const void* second = nullptr;
  ASSERT_EQ(getTable(&first, &id), CUDA_SUCCESS);
  ASSERT_EQ(getTable(&second, &id), CUDA_SUCCESS);
  EXPECT_EQ(first, second);
  EXPECT_EQ(*static_cast<const std::size_t*>(first), 13 * sizeof(void*));
  // Context-local storage has no size word: slot 0 is a function, the table ends with null.
  std::memcpy(id.bytes, contextStorage, 16);
  ASSERT_EQ(getTable(&first, &id), CUDA_SUCCESS);
  const auto* slots = static_cast<const void* const*>(first);
  EXPECT_NE(slots[0], nullptr);
  EXPECT_EQ(slots[3], nullptr);
  const unsigned char unknown[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  std::memcpy(id.bytes, unknown, 16);
  first = &id;
  EXPECT_EQ(getTable(&first, &id), CUDA_ERROR_NOT_FOUND);
  EXPECT_EQ(first, nullptr);
  EXPECT_EQ(getTable(nullptr, &id), CUDA_ERROR_INVALID_VALUE);
}

TEST_F(DriverLibrary, IntegrityCheckAnswersTheFixedDigestsOfVersionsEndingInZeroAndOne) {
  using GetTable = CUresult (*)(const void**, const CUuuid*);
  const unsigned char integrity[16] = {0xd4, 0x08, 0x20, 0x55, 0xbd, 0xe6, 0x70, 0x4b,
                                       0x8d, 0x34, 0xba, 0x12, 0x3c, 0x66, 0xe1, 0xf2};
  CUuuid id;
  std::memcpy(id.bytes, integrity, 16);
  const void* table = nullptr;
  ASSERT_EQ(symbol<GetTable>("cuGetExportTable")(&table, &id), CUDA_SUCCESS);
  using Check = CUresult (*)(unsigned, std::uint64_t, std::uint64_t*);
  auto check = reinterpret_cast<Check>(static_cast<const void* const*>(table)[1]);
  std::uint64_t out[2] = {};
  ASSERT_EQ(check(13000, 1700000000, out), CUDA_SUCCESS);
  EXPECT_EQ(out[0], 0x3341181C03CB675CULL);
  EXPECT_EQ(out[1], 0x8ED383AA1F4CD1E8ULL);
  ASSERT_EQ(check(13001, 1700000000, out), CUDA_SUCCESS);
  EXPECT_EQ(out[0], 0x1841181C03CB675CULL);
}

TEST_F(DriverLibrary, ErrorNamesAndStringsComeFromCudaH) {
  using Text = CUresult (*)(CUresult, const char**);
  const char* text = nullptr;
  ASSERT_EQ(symbol<Text>("cuGetErrorName")(CUDA_ERROR_OUT_OF_MEMORY, &text), CUDA_SUCCESS);
  EXPECT_STREQ(text, "CUDA_ERROR_OUT_OF_MEMORY");
  ASSERT_EQ(symbol<Text>("cuGetErrorString")(CUDA_ERROR_NOT_SUPPORTED, &text), CUDA_SUCCESS);
  EXPECT_NE(std::strstr(text, "not supported"), nullptr) << text;
  EXPECT_EQ(symbol<Text>("cuGetErrorName")(static_cast<CUresult>(123456), &text), CUDA_ERROR_INVALID_VALUE);
}

}  // namespace
}  // namespace flyt::test
