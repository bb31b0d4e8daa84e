// api/generate.py rejects a bad API list with a message that names the offending entry.
#include "process.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

namespace flyt::test {
namespace {

const std::filesystem::path kApiDir = FLYT_API_DIR;

class ApiGenerator : public ::testing::Test {
 protected:
  void SetUp() override {
    m_dir = std::filesystem::temp_directory_path() /
            ("flyt-api-generator-" + std::to_string(getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(m_dir);
  }
  void TearDown() override { std::filesystem::remove_all(m_dir); }

  // Runs the generator on `toml` as the API list, with the real exports and undeclared lists.
  // `full`: as the build runs it (reads the CUDA headers, writes outputs); otherwise --check.
  ProcessResult generate(const std::string& toml, bool full = false) {
    const auto api = m_dir / "cudart.toml";
    std::ofstream(api) << toml;
    std::vector<std::string> argv{FLYT_PYTHON, (kApiDir / "generate.py").string(), "--api", api.string(),
                                  "--undeclared", (kApiDir / "cudart-undeclared.toml").string(),
                                  "--exports", (kApiDir / "libcudart13-exports.txt").string()};
    if (full) {
      argv.insert(argv.end(), {"--cxx", FLYT_CXX, "--include-dir", FLYT_CUDA_INCLUDE_DIR, "--out-dir",
                               (m_dir / "out").string()});
    } else {
      argv.emplace_back("--check");
    }
    return runProcess(argv, environmentWith({}));
  }

  std::filesystem::path m_dir;
};

constexpr const char* kMalloc = R"(
[[fn]]
name = "cudaMalloc"
id = 1
kind = "sync"
handler = "generated"
args = [
  { name = "devPtr", type = "void **", dir = "out", size = "sizeof" },
  { name = "size", type = "size_t" },
]
)";

TEST_F(ApiGenerator, AcceptsTheProjectsApiList) {
  std::ifstream in(kApiDir / "cudart.toml");
  const std::string toml{std::istreambuf_iterator<char>(in), {}};
  const auto result = generate(toml, true);
  EXPECT_EQ(result.exitCode, 0) << result.err;
  EXPECT_TRUE(std::filesystem::exists(m_dir / "out/flyt/api/methods.hpp"));
}

TEST_F(ApiGenerator, AcceptsAMinimalValidEntry) {
  const auto result = generate(kMalloc);
  EXPECT_EQ(result.exitCode, 0) << result.err;
}

TEST_F(ApiGenerator, RejectsADuplicateIdNamingBothEntries) {
  const auto result = generate(std::string(kMalloc) + R"(
[[fn]]
name = "cudaFree"
id = 1
kind = "async"
handler = "generated"
args = [{ name = "devPtr", type = "void *" }]
)");
  EXPECT_EQ(result.exitCode, 1);
  EXPECT_NE(result.err.find("'cudaFree': duplicate id 1, also used by 'cudaMalloc'"), std::string::npos) << result.err;
}

TEST_F(ApiGenerator, RejectsADuplicateName) {
  std::string toml = std::string(kMalloc) + kMalloc;
  toml.replace(toml.rfind("id = 1"), 6, "id = 2");
  const auto result = generate(toml);
  EXPECT_EQ(result.exitCode, 1);
  EXPECT_NE(result.err.find("'cudaMalloc': duplicate name"), std::string::npos) << result.err;
}

TEST_F(ApiGenerator, RejectsAnUnknownDirectionNamingTheEntryAndArgument) {
  std::string toml = kMalloc;
  toml.replace(toml.find("dir = \"out\""), 11, "dir = \"sideways\"");
  const auto result = generate(toml);
  EXPECT_EQ(result.exitCode, 1);
  EXPECT_NE(result.err.find("'cudaMalloc': argument 'devPtr': unknown direction 'sideways'"), std::string::npos)
      << result.err;
}

TEST_F(ApiGenerator, RejectsASizeRuleThatNamesNoArgument) {
  std::string toml = kMalloc;
  toml.replace(toml.find("size = \"sizeof\""), 15, "size = \"bytes\"");
  const auto result = generate(toml);
  EXPECT_EQ(result.exitCode, 1);
  EXPECT_NE(result.err.find("'cudaMalloc': argument 'devPtr': size rule 'bytes' names no argument"), std::string::npos)
      << result.err;
}

TEST_F(ApiGenerator, RejectsAnUnknownKind) {
  std::string toml = kMalloc;
  toml.replace(toml.find("\"sync\""), 6, "\"eventually\"");
  const auto result = generate(toml);
  EXPECT_EQ(result.exitCode, 1);
  EXPECT_NE(result.err.find("'cudaMalloc': unknown kind 'eventually'"), std::string::npos) << result.err;
}

TEST_F(ApiGenerator, RejectsAFunctionNvidiasRuntimeDoesNotExport) {
  std::string toml = kMalloc;
  toml.replace(toml.find("\"cudaMalloc\""), 12, "\"cudaMallocEverything\"");
  const auto result = generate(toml);
  EXPECT_EQ(result.exitCode, 1);
  EXPECT_NE(result.err.find("'cudaMallocEverything' is not exported"), std::string::npos) << result.err;
}

TEST_F(ApiGenerator, RejectsAnEntryThatForgetsItsPerThreadStreamExport) {
  const auto result = generate(R"(
[[fn]]
name = "cudaStreamSynchronize"
id = 1
kind = "sync"
handler = "generated"
args = [{ name = "stream", type = "cudaStream_t" }]
)");
  EXPECT_EQ(result.exitCode, 1);
  EXPECT_NE(result.err.find("set per_thread = \"cudaStreamSynchronize_ptsz\""), std::string::npos) << result.err;
}

TEST_F(ApiGenerator, RejectsAnArgumentTypeThatDiffersFromNvidiasHeader) {
  std::string toml = kMalloc;
  toml.replace(toml.find("\"size_t\""), 8, "\"int\"");
  const auto result = generate(toml, true);
  EXPECT_EQ(result.exitCode, 1);
  EXPECT_NE(result.err.find("'cudaMalloc': argument 'size' is 'int', the header declares 'size_t size'"),
            std::string::npos)
      << result.err;
}

}  // namespace
}  // namespace flyt::test
