// iceoryx 2.0 allows one RouDi per host, and CTest's RESOURCE_LOCK only serialises tests of one
// ctest run: every test process that starts a RouDi (directly or through a node) first takes this
// host-wide lock, held until the process exits. Waits up to 45 s, then fails the test.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <thread>

namespace flyt::test {

inline void holdHostRouDiLock() {
  using namespace std::chrono_literals;
  static const bool held = [] {
    const int fd = ::open("/tmp/flyt-test-roudi.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0666);
    if (fd < 0) return false;
    for (auto deadline = std::chrono::steady_clock::now() + 45s;
         std::chrono::steady_clock::now() < deadline;) {
      if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }();
  ASSERT_TRUE(held) << "another RouDi test kept /tmp/flyt-test-roudi.lock for 45 s";
}

}  // namespace flyt::test
