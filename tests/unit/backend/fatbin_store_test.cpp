// The node's fatbin cache (module_cache.hpp): stored images are found again, files are checked
// against the hash and size they are asked for, never trusted by name.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "flyt/api/fatbin.hpp"
#include "module_cache.hpp"

namespace flyt::backend {
namespace {

using Bytes = std::vector<std::byte>;

Bytes readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  std::vector<char> chars{std::istreambuf_iterator<char>(in), {}};
  Bytes bytes(chars.size());
  std::memcpy(bytes.data(), chars.data(), chars.size());
  return bytes;
}

class FatbinStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char base[] = "/tmp/flyt-fatbin-store-XXXXXX";
    ASSERT_NE(::mkdtemp(base), nullptr);
    m_base = base;
    m_dir = m_base + "/cache";
  }
  void TearDown() override { std::filesystem::remove_all(m_base); }
  std::string m_base, m_dir;
};

TEST_F(FatbinStoreTest, StoresAndFindsCheckedImages) {
  const Bytes image = readFile(FLYT_LAYOUT_FATBIN);
  const std::uint64_t hash = api::fatbinHash(image);
  FatbinStore store(m_dir);
  EXPECT_FALSE(store.find(hash, image.size()));
  store.store(hash, image);

  struct stat st{};
  ASSERT_EQ(::stat(m_dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700U);
  const std::string file = fmt::format("{}/{:016x}.fatbin", m_dir, hash);
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600U);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(m_dir), {}), 1);  // no temporary left

  FatbinStore other(m_dir);  // another worker
  auto found = other.find(hash, image.size());
  ASSERT_TRUE(found);
  EXPECT_EQ(*found, image);
  EXPECT_FALSE(other.find(hash, image.size() + 1));  // asked for another size
  EXPECT_FALSE(other.find(hash, api::kMaxFatbinBytes + 1));

  // A file whose bytes do not hash to its name is absent.
  Bytes corrupt = image;
  corrupt[corrupt.size() / 2] ^= std::byte{1};
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(corrupt.data()), static_cast<std::streamsize>(corrupt.size()));
  }
  EXPECT_FALSE(FatbinStore(m_dir).find(hash, image.size()));
  // Nor is a file stored under another image's hash.
  const std::uint64_t corruptHash = api::fatbinHash(corrupt);
  std::filesystem::copy_file(FLYT_LAYOUT_FATBIN, fmt::format("{}/{:016x}.fatbin", m_dir, corruptHash),
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_FALSE(FatbinStore(m_dir).find(corruptHash, image.size()));
}

TEST_F(FatbinStoreTest, RefusesADirectoryOthersMayEnter) {
  ASSERT_EQ(::mkdir(m_dir.c_str(), 0755), 0);
  ASSERT_EQ(::chmod(m_dir.c_str(), 0755), 0);
  const Bytes image = readFile(FLYT_LAYOUT_FATBIN);
  FatbinStore store(m_dir);
  store.store(api::fatbinHash(image), image);
  EXPECT_TRUE(std::filesystem::is_empty(m_dir));
  EXPECT_FALSE(store.find(api::fatbinHash(image), image.size()));
}

TEST_F(FatbinStoreTest, EmptyDirectoryMeansNoCache) {
  EXPECT_FALSE(FatbinStore("").enabled());
  ::setenv("FLYT_CACHE_DIR", "", 1);
  EXPECT_FALSE(FatbinStore::fromEnvironment().enabled());
  ::unsetenv("FLYT_CACHE_DIR");
  EXPECT_EQ(FatbinStore::fromEnvironment().directory(), fmt::format("/dev/shm/flyt-fatbins-{}", ::geteuid()));
}

}  // namespace
}  // namespace flyt::backend
