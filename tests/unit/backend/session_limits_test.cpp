// Session limits without a GPU: the SM share arithmetic, the memory quota, the control protocol's
// parsing, and MPS daemon detection and control against a stand-in nvidia-cuda-mps-control (a
// shell script on PATH) in a private pipe directory.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include <filesystem>
#include <fstream>
#include <string>

#include "flyt/backend/memory_quota.hpp"
#include "flyt/transport/units.hpp"
#include "flyt/backend/session_limits.hpp"
#include "mps.hpp"
#include "node_config.hpp"
#include "worker_control.hpp"

namespace fb = flyt::backend;

TEST(SessionLimits, GreenContextShareIsRoundedDownToTheGranularityButNeverBelowOneGranule) {
  EXPECT_EQ(fb::greenContextSmCount(132, 50, 8), 64u);   // 66 -> 64
  EXPECT_EQ(fb::greenContextSmCount(132, 25, 8), 32u);   // 33 -> 32
  EXPECT_EQ(fb::greenContextSmCount(132, 1, 8), 8u);     // 1 -> one granule
  EXPECT_EQ(fb::greenContextSmCount(132, 99, 8), 128u);  // 130 -> 128
  EXPECT_EQ(fb::greenContextSmCount(114, 50, 8), 56u);
  EXPECT_EQ(fb::greenContextSmCount(4, 10, 8), 4u);      // never more than the device has
  EXPECT_EQ(fb::greenContextSmCount(108, 50, 2), 54u);
}

TEST(SessionLimits, MpsShareHasNoGranularity) {
  EXPECT_EQ(fb::mpsSmCount(132, 50), 66u);
  EXPECT_EQ(fb::mpsSmCount(132, 1), 1u);
  EXPECT_EQ(fb::mpsSmCount(132, 33), 43u);
}

TEST(SessionLimits, MpsPinnedLimitIsTheQuotaRoundedUpToMiBPlusHeadroom) {
  EXPECT_EQ(fb::mpsPinnedMemoryMiB(1ULL << 30), 1024u + fb::kMpsMemoryHeadroomMiB);
  EXPECT_EQ(fb::mpsPinnedMemoryMiB((1ULL << 30) + 1), 1025u + fb::kMpsMemoryHeadroomMiB);
}

TEST(SessionLimits, OnlyAPartialShareWithoutMpsWantsAGreenContext) {
  fb::SessionLimits limits;
  EXPECT_FALSE(limits.wantsGreenContext());
  limits.smPercent = 100;
  EXPECT_FALSE(limits.wantsGreenContext());
  limits.smPercent = 50;
  EXPECT_TRUE(limits.wantsGreenContext());
  limits.mps = true;
  EXPECT_FALSE(limits.wantsGreenContext());
  EXPECT_TRUE(limits.sharesSms());
}

TEST(MemoryQuota, ChargesUpToTheLimitAndKeepsAllocationsWhenItShrinks) {
  fb::MemoryQuota quota(1000);
  EXPECT_TRUE(quota.tryCharge(600));
  EXPECT_FALSE(quota.tryCharge(401));
  EXPECT_EQ(quota.used(), 600u);
  EXPECT_TRUE(quota.tryCharge(400));
  EXPECT_EQ(quota.remaining(), 0u);
  quota.setLimit(500);  // below what is in use: nothing is taken away, nothing new fits
  EXPECT_EQ(quota.used(), 1000u);
  EXPECT_EQ(quota.remaining(), 0u);
  EXPECT_FALSE(quota.tryCharge(1));
  quota.release(600);
  EXPECT_EQ(quota.remaining(), 100u);
  EXPECT_TRUE(quota.tryCharge(100));
  quota.setLimit(0);  // unlimited
  EXPECT_TRUE(quota.tryCharge(UINT64_MAX / 2));
  quota.releaseAll();
  EXPECT_EQ(quota.used(), 0u);
}

TEST(WorkerControl, ParsesMemoryLimitLinesAndNothingElse) {
  ASSERT_TRUE(fb::parseControlLine("memory-limit 1073741824").has_value());
  EXPECT_EQ(fb::parseControlLine("memory-limit 1073741824")->memoryLimit, 1073741824u);
  EXPECT_EQ(fb::parseControlLine("memory-limit 0")->memoryLimit, 0u);
  EXPECT_FALSE(fb::parseControlLine("memory-limit").has_value());
  EXPECT_FALSE(fb::parseControlLine("memory-limit ").has_value());
  EXPECT_FALSE(fb::parseControlLine("memory-limit 12x").has_value());
  EXPECT_FALSE(fb::parseControlLine("memory-limit -1").has_value());
  EXPECT_FALSE(fb::parseControlLine("sm-percent 50").has_value());
}

TEST(NodeConfig, ByteSizesTakeBinaryUnits) {
  EXPECT_EQ(flyt::transport::parseSize("1073741824").value(), 1073741824u);
  EXPECT_EQ(flyt::transport::parseSize("64MiB").value(), 64u << 20);
  EXPECT_EQ(flyt::transport::parseSize("8GiB").value(), 8ULL << 30);
  EXPECT_EQ(flyt::transport::parseSize("8G").value(), 8ULL << 30);
  EXPECT_EQ(flyt::transport::parseSize("8GB").value(), 8'000'000'000ULL);  // as flytctl reads it
  EXPECT_EQ(flyt::transport::parseSize("1.5GiB").value(), 3ULL << 29);
  EXPECT_EQ(flyt::transport::parseSize("0").value(), 0u);
  EXPECT_FALSE(flyt::transport::parseSize("").has_value());
  EXPECT_FALSE(flyt::transport::parseSize("8 apples").has_value());
  EXPECT_FALSE(flyt::transport::parseSize("-1GiB").has_value());
  EXPECT_FALSE(flyt::transport::parseSize("100000000TiB").has_value());
}

namespace {

// A private pipe directory and a stand-in nvidia-cuda-mps-control first on PATH: "-d" starts a
// process listening on the control socket (as the CUDA 13 driver's daemon does), "quit" on stdin
// stops it and removes the socket.
class MpsDaemon : public ::testing::Test {
 protected:
  void SetUp() override {
    m_root = std::filesystem::temp_directory_path() / ("flyt-mps-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(m_root / "bin");
    std::filesystem::create_directories(m_root / "pipes");
    const auto script = m_root / "bin" / "nvidia-cuda-mps-control";
    std::ofstream(script)
        << "#!/bin/sh\n"
           "dir=$CUDA_MPS_PIPE_DIRECTORY\n"
           "if [ \"$1\" = -d ]; then\n"
           "  python3 -c 'import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); "
           "s.listen(8); time.sleep(600)' \"$dir/control\" </dev/null >/dev/null 2>&1 &\n"
           "  echo $! > \"$dir/daemon.pid\"; exit 0\n"
           "fi\n"
           "read command; [ \"$command\" = quit ] && kill \"$(cat \"$dir/daemon.pid\")\" && rm -f \"$dir/control\"\n";
    std::filesystem::permissions(script, std::filesystem::perms::owner_all);
    m_path = std::getenv("PATH") ? std::getenv("PATH") : "";
    ::setenv("PATH", ((m_root / "bin").string() + ":" + m_path).c_str(), 1);
    ::setenv("CUDA_MPS_PIPE_DIRECTORY", (m_root / "pipes").c_str(), 1);
  }
  void TearDown() override {
    ::setenv("PATH", m_path.c_str(), 1);
    ::unsetenv("CUDA_MPS_PIPE_DIRECTORY");
    std::filesystem::remove_all(m_root);
  }
  std::filesystem::path m_root;
  std::string m_path;
};

}  // namespace

TEST_F(MpsDaemon, PipeDirectoryComesFromTheEnvironmentWithNvidiasDefault) {
  EXPECT_EQ(fb::mpsPipeDirectory(), (m_root / "pipes").string());
  ::unsetenv("CUDA_MPS_PIPE_DIRECTORY");
  EXPECT_EQ(fb::mpsPipeDirectory(), "/tmp/nvidia-mps");
}

TEST_F(MpsDaemon, OnlyAControlPipeOrSocketADaemonServesCounts) {
  const auto control = m_root / "pipes" / "control";
  EXPECT_FALSE(fb::mpsControlRunning());
  std::ofstream(control) << "not a fifo";
  EXPECT_FALSE(fb::mpsControlRunning());
  std::filesystem::remove(control);
  // A FIFO nobody reads (its daemon died) does not count; one with a reader does.
  ASSERT_EQ(::mkfifo(control.c_str(), 0600), 0);
  EXPECT_FALSE(fb::mpsControlRunning());
  const int reader = ::open(control.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(reader, 0);
  EXPECT_TRUE(fb::mpsControlRunning());
  ::close(reader);
  std::filesystem::remove(control);
  // A socket: listening counts, a stale one left by a dead daemon does not.
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, control.c_str(), sizeof address.sun_path - 1);
  const int listener = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  EXPECT_TRUE(fb::mpsControlRunning());
  ::close(listener);
  EXPECT_FALSE(fb::mpsControlRunning());
}

TEST_F(MpsDaemon, StartWaitsForTheControlFifoAndStopSaysQuit) {
  ASSERT_TRUE(fb::startMpsDaemon(std::chrono::seconds(5)).has_value());
  EXPECT_TRUE(fb::mpsControlRunning());
  ASSERT_TRUE(fb::stopMpsDaemon(std::chrono::seconds(5)).has_value());
  EXPECT_FALSE(fb::mpsControlRunning());
}

TEST_F(MpsDaemon, StartFailsClearlyWithoutTheProgram) {
  ::setenv("PATH", (m_root / "pipes").c_str(), 1);  // no nvidia-cuda-mps-control there
  auto started = fb::startMpsDaemon(std::chrono::seconds(2));
  ASSERT_FALSE(started.has_value());
  EXPECT_NE(started.error().message.find("nvidia-cuda-mps-control"), std::string::npos);
}
