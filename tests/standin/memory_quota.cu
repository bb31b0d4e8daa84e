// The session's memory quota and SM share as the application sees them, through whatever
// libcudart.so.13 the program loads (run by run_on_limited_node.sh against a flyt-node started
// with --session-memory-limit and --session-sm-percent; on the GPU stand-in in CI, on a GPU by hand).
//   FLYT_TEST_QUOTA_BYTES  the node's --session-memory-limit (required)
//   FLYT_TEST_EXPECT_SMS   the multiProcessorCount the share must report (optional)
// Checks: cudaMemGetInfo and cudaGetDeviceProperties report the quota; every allocation path
// (cudaMalloc, cudaMallocPitch, cudaMalloc3D, cudaMallocAsync) is charged; a request beyond what is
// left fails with cudaErrorMemoryAllocation without breaking the session, and succeeds again once
// memory was freed. Exit 0 when every check holds, 1 with a FAIL line otherwise.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "standin_check.h"

namespace {

size_t freeNow() {
  size_t free = 0, total = 0;
  return cudaMemGetInfo(&free, &total) == cudaSuccess ? free : ~size_t(0);
}

// The failed call's error is reported once by cudaGetLastError, then the session goes on.
int refusedCleanly(cudaError_t error) {
  CHECK(error == cudaErrorMemoryAllocation);
  CHECK(cudaGetLastError() == cudaErrorMemoryAllocation);
  CHECK(cudaGetLastError() == cudaSuccess);
  return 0;
}

}  // namespace

int main() {
  const char* quotaText = std::getenv("FLYT_TEST_QUOTA_BYTES");
  CHECK(quotaText != nullptr);
  const size_t quota = std::strtoull(quotaText, nullptr, 10);
  CHECK(quota >= (64u << 20));

  size_t free = 0, total = 0;
  OK(cudaMemGetInfo(&free, &total));
  std::printf("cudaMemGetInfo: free %zu total %zu\n", free, total);
  CHECK(total == quota);
  CHECK(free == quota);
  cudaDeviceProp prop{};
  OK(cudaGetDeviceProperties(&prop, 0));
  CHECK(prop.totalGlobalMem == quota);
  int sms = 0;
  OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  CHECK(sms == prop.multiProcessorCount);
  std::printf("multiProcessorCount=%d\n", prop.multiProcessorCount);
  if (const char* expect = std::getenv("FLYT_TEST_EXPECT_SMS"); expect != nullptr) {
    CHECK(prop.multiProcessorCount == std::atoi(expect));
  }

  // One allocation of each kind, each charged with what it really takes.
  size_t used = 0;
  char* plain = nullptr;
  OK(cudaMalloc(&plain, quota / 4));
  used += quota / 4;
  CHECK(freeNow() == quota - used);
  void* pitched = nullptr;
  size_t pitch = 0;
  OK(cudaMallocPitch(&pitched, &pitch, 1000, 1024));
  CHECK(pitch >= 1000);
  used += pitch * 1024;
  CHECK(freeNow() == quota - used);
  cudaPitchedPtr cube{};
  OK(cudaMalloc3D(&cube, make_cudaExtent(1000, 64, 16)));
  CHECK(cube.ptr != nullptr && cube.pitch >= 1000 && cube.ysize == 64);
  used += cube.pitch * 64 * 16;
  CHECK(freeNow() == quota - used);
  void* streamOrdered = nullptr;
  OK(cudaMallocAsync(&streamOrdered, quota / 8, nullptr));
  used += quota / 8;
  CHECK(freeNow() == quota - used);

  // One byte beyond what is left, by every path: refused, and nothing changes.
  const size_t left = quota - used;
  void* refused = nullptr;
  CHECK(refusedCleanly(cudaMalloc(&refused, left + 1)) == 0);
  CHECK(refusedCleanly(cudaMallocAsync(&refused, left + 1, nullptr)) == 0);
  size_t refusedPitch = 0;
  CHECK(refusedCleanly(cudaMallocPitch(&refused, &refusedPitch, left + 1, 1)) == 0);
  cudaPitchedPtr refusedCube{};
  CHECK(refusedCleanly(cudaMalloc3D(&refusedCube, make_cudaExtent(left + 1, 1, 1))) == 0);
  CHECK(refusedCleanly(cudaMalloc(&refused, size_t(1) << 62)) == 0);
  CHECK(freeNow() == left);

  // The session still works: a copy round-trips through the first allocation.
  std::vector<char> host(4096), back(4096);
  for (size_t i = 0; i < host.size(); ++i) host[i] = char(i * 13);
  OK(cudaMemcpy(plain, host.data(), host.size(), cudaMemcpyHostToDevice));
  OK(cudaMemcpy(back.data(), plain, back.size(), cudaMemcpyDeviceToHost));
  CHECK(back == host);

  // Exactly what is left fits; then nothing does, until something is freed.
  void* rest = nullptr;
  OK(cudaMalloc(&rest, left));
  CHECK(freeNow() == 0);
  CHECK(refusedCleanly(cudaMalloc(&refused, 256)) == 0);
  OK(cudaFree(rest));
  OK(cudaMalloc(&rest, 256));
  OK(cudaFree(rest));
  OK(cudaFreeAsync(streamOrdered, nullptr));
  OK(cudaFree(pitched));
  OK(cudaFree(cube.ptr));
  OK(cudaFree(plain));
  OK(cudaDeviceSynchronize());
  CHECK(freeNow() == quota);
  // All of it at once, after everything was given back.
  OK(cudaMalloc(&rest, quota));
  OK(cudaFree(rest));
  OK(cudaDeviceSynchronize());
  std::printf("memory_quota: all checks passed\n");
  return 0;
}
