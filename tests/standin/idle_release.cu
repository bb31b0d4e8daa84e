// What an application sees after its node released the session for idleness: run by
// run_on_limited_node.sh against a flyt-node started with --session-idle-timeout-s 1. It makes one
// call, stays idle for FLYT_TEST_IDLE_MS milliseconds (longer than the timeout), and expects its
// next call to fail with cudaErrorDevicesUnavailable (the worker is gone) instead of hanging or
// crashing. Exit 0 when every check holds, 1 with a FAIL line otherwise.
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "standin_check.h"

int main() {
  const char* idle = std::getenv("FLYT_TEST_IDLE_MS");
  CHECK(idle != nullptr);
  void* memory = nullptr;
  OK(cudaMalloc(&memory, 1 << 20));
  ::usleep(static_cast<useconds_t>(std::atoi(idle)) * 1000);
  void* more = nullptr;
  const cudaError_t after = cudaMalloc(&more, 1 << 20);
  std::printf("after %s ms idle: %s\n", idle, cudaGetErrorName(after));
  CHECK(after == cudaErrorDevicesUnavailable);
  std::printf("idle_release: all checks passed\n");
  return 0;
}
