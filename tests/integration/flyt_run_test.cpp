// `flyt` as a real process: exit status, the program's environment, the private node of a
// zero-configuration run, an unreachable server, and command-line errors.
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <regex>
#include <string>

#include "process_helpers.hpp"

namespace {

using namespace std::chrono_literals;
using flyt::test::Process;

struct Finished {
  int code = -1;  // exit code, or -1 when killed by a signal or still running
  std::string out;
  std::string err;
};

// Runs flyt with `args` to completion (bounded), with FLYT_SERVER cleared.
Finished runFlyt(std::vector<std::string> args) {
  args.insert(args.begin(), FLYT_TOOL_PATH);
  Process flyt(std::move(args), {"FLYT_SERVER="});
  Finished result;
  result.out = flyt.readAll(20s);
  auto status = flyt.wait(20s);
  if (status && WIFEXITED(*status)) result.code = WEXITSTATUS(*status);
  result.err = flyt.stderrText();
  return result;
}

TEST(FlytRun, ExitsWithTheProgramsStatus) {
  flyt::test::holdHostRouDiLock();
  auto exited = runFlyt({"run", "--executor", "standin", "--", "/bin/sh", "-c", "exit 3"});
  EXPECT_EQ(exited.code, 3) << exited.err;
  auto killed = runFlyt({"run", "--executor", "standin", "--", "/bin/sh", "-c", "kill -KILL $$"});
  EXPECT_EQ(killed.code, 128 + 9) << killed.err;
}

TEST(FlytRun, GivesTheProgramFlytsRuntimeAndAServer) {
  flyt::test::holdHostRouDiLock();
  auto run = runFlyt({"run", "--executor", "standin", "--", "/bin/sh", "-c",
                      "echo \"$LD_PRELOAD\"; echo \"$LD_LIBRARY_PATH\"; echo \"$FLYT_SERVER\""});
  ASSERT_EQ(run.code, 0) << run.err;
  std::istringstream lines(run.out);
  std::string preload, libraryPath, server;
  std::getline(lines, preload);
  std::getline(lines, libraryPath);
  std::getline(lines, server);
  const auto cudart = std::filesystem::canonical(FLYT_CUDART_PATH);
  ASSERT_FALSE(preload.empty());
  EXPECT_EQ(std::filesystem::canonical(preload.substr(0, preload.find(':'))), cudart) << preload;
  EXPECT_TRUE(preload.substr(0, preload.find(':')).ends_with("/libcudart.so.13")) << preload;
  EXPECT_TRUE(libraryPath.starts_with(cudart.parent_path().string())) << libraryPath;
  EXPECT_TRUE(server.starts_with("shm://flyt-run-")) << server;
}

// The zero-configuration run: a private node serves the program (a session through it really
// opens, so the program did go through Flyt) and is gone afterwards.
TEST(FlytRun, StartsAPrivateNodeForTheRunAndStopsItAfterwards) {
  flyt::test::holdHostRouDiLock();
  auto run = runFlyt({"run", "--executor", "standin", "--", "/bin/sh", "-c",
                      std::string("echo \"$FLYT_SERVER\"; exec ") + FLYT_SESSION_CLIENT_PATH +
                          " \"$FLYT_SERVER\""});
  ASSERT_EQ(run.code, 0) << run.out << run.err;
  std::smatch match;
  ASSERT_TRUE(std::regex_search(run.out, match,
                                std::regex(R"((shm://(flyt-run-\S+))\nsession [0-9a-f]{16} shm://(\S+))")))
      << run.out;
  const std::string nodeName = match[2];
  EXPECT_TRUE(std::string(match[3]).starts_with(nodeName + "-w")) << "the session was not redirected"
                                                                  << " to a worker of the private node";
  EXPECT_TRUE(flyt::test::processesWithArgument(nodeName).empty())
      << "a process of the private node " << nodeName << " outlived the run";
}

TEST(FlytRun, RefusesWithAClearErrorWhenThereIsNeitherAServerNorAGpu) {
  if (std::filesystem::exists("/dev/nvidiactl")) GTEST_SKIP() << "this host has a GPU";
  const std::string marker = ::testing::TempDir() + "/flyt-run-nogpu-" + std::to_string(::getpid());
  ::unsetenv("FLYT_SERVER");
  auto run = runFlyt({"run", "--", "/usr/bin/touch", marker});
  EXPECT_EQ(run.code, 125) << run.err;
  EXPECT_NE(run.err.find("no Flyt server"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("--executor standin"), std::string::npos) << run.err;
  EXPECT_FALSE(std::filesystem::exists(marker)) << "the program ran";
}

TEST(FlytRun, WarnsThatItRunsOnTheStandInWhenAskedTo) {
  flyt::test::holdHostRouDiLock();
  auto run = runFlyt({"run", "--executor", "standin", "--", "/bin/true"});
  EXPECT_EQ(run.code, 0) << run.err;
  EXPECT_NE(run.err.find("running on the GPU stand-in (test double)"), std::string::npos) << run.err;
}

TEST(FlytRun, RefusesAnUnreachableServerWithoutRunningTheProgram) {
  const std::string marker = ::testing::TempDir() + "/flyt-run-ran-" + std::to_string(::getpid());
  auto run = runFlyt({"run", "--server", "tcp://127.0.0.1:1", "--", "/usr/bin/touch", marker});
  EXPECT_NE(run.code, 0);
  EXPECT_NE(run.err.find("tcp://127.0.0.1:1 is unreachable"), std::string::npos) << run.err;
  EXPECT_FALSE(std::filesystem::exists(marker)) << "the program ran against an unreachable server";
}

TEST(FlytRun, ReportsAProgramThatCannotBeExecutedOrIsMissing) {
  flyt::test::holdHostRouDiLock();
  auto run = runFlyt({"run", "--executor", "standin", "--", "/nonexistent/program"});
  EXPECT_EQ(run.code, 127);
  EXPECT_NE(run.err.find("cannot run '/nonexistent/program'"), std::string::npos) << run.err;
  auto missing = runFlyt({"run"});
  EXPECT_NE(missing.code, 0);
  EXPECT_NE(missing.err.find("no PROGRAM given"), std::string::npos) << missing.err;
}

TEST(Flyt, RejectsAnUnknownSubcommand) {
  auto run = runFlyt({"frobnicate"});
  EXPECT_NE(run.code, 0);
  EXPECT_NE(run.err.find("unknown subcommand 'frobnicate'"), std::string::npos) << run.err;
}

TEST(Flyt, NodeSubcommandIsFlytNode) {
  auto help = runFlyt({"node", "--help"});
  EXPECT_EQ(help.code, 0) << help.err;
  EXPECT_NE(help.out.find("flyt-node"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("--tcp"), std::string::npos) << help.out;
}

}  // namespace
