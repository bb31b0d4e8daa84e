// Flyt's libcudart.so.13 as the dynamic loader and an nvcc-built application see it.
#include "process.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace flyt::test {
namespace {

const std::filesystem::path kLibrary = FLYT_CUDART_PATH;
constexpr int kCudaErrorNotSupported = 801;  // driver_types.h: cudaErrorNotSupported

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> result;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) result.push_back(line);
  return result;
}

std::string joined(const std::set<std::string>& names) {
  std::string result;
  for (const auto& name : names) result += "\n  " + name;
  return result;
}

// "name@@node" for every symbol the library defines, from readelf's dynamic symbol table.
std::set<std::string> definedDynamicSymbols() {
  const auto result = runProcess({FLYT_READELF, "--dyn-syms", "-W", kLibrary.string()}, environmentWith({}));
  EXPECT_EQ(result.exitCode, 0) << result.err;
  std::set<std::string> symbols;
  for (const auto& line : lines(result.out)) {
    std::istringstream fields(line);
    const std::vector<std::string> f{std::istream_iterator<std::string>(fields), {}};
    // Num: Value Size Type Bind Vis Ndx Name
    if (f.size() < 8 || f[0].back() != ':' || f[6] == "UND" || f[6] == "Ndx") continue;
    symbols.insert(f[3] == "FUNC" ? f[7] : f[3] + " " + f[7]);
  }
  return symbols;
}

ProcessResult runClient(bool throughFlyt) {
  std::vector<std::string> add{"LD_BIND_NOW=1"};
  if (throughFlyt) add.push_back("LD_LIBRARY_PATH=" + kLibrary.parent_path().string());
  return runProcess({FLYT_NVCC_CLIENT_PATH}, environmentWith(add, {"LD_LIBRARY_PATH", "LD_BIND_NOW", "LD_PRELOAD"}));
}

std::vector<std::string> linesStartingWith(const std::string& text, const std::string& prefix) {
  std::vector<std::string> result;
  for (const auto& line : lines(text)) {
    if (line.starts_with(prefix)) result.push_back(line.substr(prefix.size()));
  }
  return result;
}

TEST(CudartLibrary, HasTheSonameOfNvidiasRuntime) {
  const auto result = runProcess({FLYT_READELF, "-d", kLibrary.string()}, environmentWith({}));
  ASSERT_EQ(result.exitCode, 0) << result.err;
  EXPECT_NE(result.out.find("Library soname: [libcudart.so.13]"), std::string::npos) << result.out;
  EXPECT_EQ(result.out.find("Shared library: [libcudart"), std::string::npos)
      << "Flyt's runtime must not depend on NVIDIA's:\n" << result.out;
}

TEST(CudartLibrary, ExportsExactlyNvidiasFunctionsAllUnderTheVersionNodeLibcudartSo13) {
  std::set<std::string> expected;
  std::ifstream exports(FLYT_EXPORTS_PATH);
  ASSERT_TRUE(exports) << FLYT_EXPORTS_PATH;
  for (std::string line; std::getline(exports, line);) {
    if (const auto at = line.find('@'); at != std::string::npos) expected.insert(line.substr(0, at) + "@@" + line.substr(at + 1));
  }
  ASSERT_EQ(expected.size(), 422u);

  auto actual = definedDynamicSymbols();
  // GNU ld defines the version node itself as an absolute symbol, as in NVIDIA's library.
  actual.erase("OBJECT libcudart.so.13");

  std::set<std::string> missing, extra;
  std::ranges::set_difference(expected, actual, std::inserter(missing, missing.end()));
  std::ranges::set_difference(actual, expected, std::inserter(extra, extra.end()));
  EXPECT_TRUE(missing.empty()) << missing.size() << " missing (or under another version):" << joined(missing);
  EXPECT_TRUE(extra.empty()) << extra.size() << " exported but not NVIDIA's:" << joined(extra);
}

TEST(CudartLibrary, NvccBuiltProgramStartsWithBindNowAndLoadsFlytsRuntimeOnly) {
  const auto result = runClient(true);
  ASSERT_EQ(result.exitCode, 0) << "stdout:\n" << result.out << "stderr:\n" << result.err;
  const auto runtimes = linesStartingWith(result.out, "libcudart ");
  ASSERT_EQ(runtimes.size(), 1u) << result.out;
  EXPECT_EQ(std::filesystem::path(runtimes[0]), std::filesystem::canonical(kLibrary));
}

TEST(CudartLibrary, UnsupportedCallReturnsNotSupportedEveryTimeAndIsLoggedOnce) {
  const auto result = runClient(true);
  ASSERT_EQ(result.exitCode, 0) << result.err;
  const auto graph = linesStartingWith(result.out, "graph ");
  ASSERT_EQ(graph.size(), 1u) << result.out;
  EXPECT_EQ(graph[0], std::to_string(kCudaErrorNotSupported) + " " + std::to_string(kCudaErrorNotSupported));

  const auto logLines = lines(result.err);
  const auto named = std::ranges::count_if(logLines, [](const std::string& l) { return l.find("cudaGraphCreate ") != std::string::npos; });
  EXPECT_EQ(named, 1) << result.err;
  EXPECT_NE(result.err.find("cudaGraphCreate is not supported by Flyt"), std::string::npos) << result.err;
}

TEST(CudartLibrary, KernelLaunchWithoutASessionFailsWithDevicesUnavailableAsTheLastError) {
  const auto result = runClient(true);
  ASSERT_EQ(result.exitCode, 0) << result.err;
  // Registration and the launch configuration are handled locally; the first launch needs the
  // session (to upload the fatbin), which cannot be reached without `flyt run`.
  constexpr int kCudaErrorDevicesUnavailable = 46;  // driver_types.h
  EXPECT_EQ(linesStartingWith(result.out, "launch "), std::vector<std::string>{std::to_string(kCudaErrorDevicesUnavailable)});
  EXPECT_EQ(result.err.find("__cudaRegisterFatBinary is not supported"), std::string::npos) << result.err;
  EXPECT_EQ(result.err.find("__cudaPushCallConfiguration is not supported"), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("FLYT_SERVER is not set"), std::string::npos) << result.err;
}

// The control for the tests above: without the library path the same program does not load Flyt's
// runtime (it gets NVIDIA's from the default path, or does not start where there is none).
TEST(CudartLibrary, WithoutTheLibraryPathTheProgramDoesNotLoadFlyt) {
  const auto result = runClient(false);
  for (const auto& runtime : linesStartingWith(result.out, "libcudart ")) {
    EXPECT_NE(std::filesystem::path(runtime), std::filesystem::canonical(kLibrary));
  }
  EXPECT_EQ(result.err.find("not supported by Flyt"), std::string::npos) << result.err;
}

}  // namespace
}  // namespace flyt::test
