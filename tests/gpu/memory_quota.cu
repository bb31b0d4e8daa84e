// A session's memory quota on the GPU: run through a node with --session-memory-limit (and, for
// the SM check, --session-sm-percent), e.g.
//   FLYT_TEST_QUOTA_BYTES=1073741824 FLYT_TEST_EXPECT_SMS=64 flyt run --server shm://NODE -- memory_quota
// Natively, or without FLYT_TEST_QUOTA_BYTES, it is skipped (77): there is no quota to check.
// Checks that cudaMemGetInfo/cudaGetDeviceProperties report the quota (and the SM grant), that
// every allocation path is charged and refused beyond the quota with cudaErrorMemoryAllocation
// without breaking the session (a kernel still runs and its result is right), and that memory
// freed can be allocated again. Exit 0 passed, 1 failed, 77 skipped.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "gpu_check.cuh"

namespace {

#define EXPECT(cond)                                                   \
  do {                                                                 \
    if (!(cond)) {                                                     \
      std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(kExitFailed);                                          \
    }                                                                  \
  } while (0)

size_t freeNow() {
  size_t free = 0, total = 0;
  CHECK_CUDA(cudaMemGetInfo(&free, &total));
  return free;
}

void expectRefused(cudaError_t error) {
  EXPECT(error == cudaErrorMemoryAllocation);
  EXPECT(cudaGetLastError() == cudaErrorMemoryAllocation);
  EXPECT(cudaGetLastError() == cudaSuccess);
}

__global__ void fill(int* data, int n, int value) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) data[i] = value + i;
}

}  // namespace

int main() {
  require_cuda_device();
  const char* quotaText = std::getenv("FLYT_TEST_QUOTA_BYTES");
  if (quotaText == nullptr) {
    std::printf("memory_quota: skipped (FLYT_TEST_QUOTA_BYTES is not set)\n");
    return kExitSkipped;
  }
  const size_t quota = std::strtoull(quotaText, nullptr, 10);
  EXPECT(quota >= (64u << 20));
  size_t free = 0, total = 0;
  CHECK_CUDA(cudaMemGetInfo(&free, &total));
  std::printf("cudaMemGetInfo: free %zu total %zu\n", free, total);
  EXPECT(total == quota && free == quota);
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  EXPECT(prop.totalGlobalMem == quota);
  std::printf("multiProcessorCount=%d\n", prop.multiProcessorCount);
  if (const char* sms = std::getenv("FLYT_TEST_EXPECT_SMS"); sms != nullptr) {
    EXPECT(prop.multiProcessorCount == std::atoi(sms));
  }

  size_t used = 0;
  int* plain = nullptr;
  CHECK_CUDA(cudaMalloc(&plain, quota / 4));
  used += quota / 4;
  void* pitched = nullptr;
  size_t pitch = 0;
  CHECK_CUDA(cudaMallocPitch(&pitched, &pitch, 1000, 1024));
  used += pitch * 1024;
  cudaPitchedPtr cube{};
  CHECK_CUDA(cudaMalloc3D(&cube, make_cudaExtent(1000, 64, 16)));
  used += cube.pitch * 64 * 16;
  void* streamOrdered = nullptr;
  CHECK_CUDA(cudaMallocAsync(&streamOrdered, quota / 8, nullptr));
  used += quota / 8;
  EXPECT(freeNow() == quota - used);

  const size_t left = quota - used;
  void* refused = nullptr;
  size_t refusedPitch = 0;
  cudaPitchedPtr refusedCube{};
  expectRefused(cudaMalloc(&refused, left + 1));
  expectRefused(cudaMallocAsync(&refused, left + 1, nullptr));
  expectRefused(cudaMallocPitch(&refused, &refusedPitch, left + 1, 1));
  expectRefused(cudaMalloc3D(&refusedCube, make_cudaExtent(left + 1, 1, 1)));
  EXPECT(freeNow() == left);

  // The session still computes.
  const int n = 1 << 20;
  fill<<<(n + 255) / 256, 256>>>(plain, n, 7);
  CHECK_CUDA(cudaGetLastError());
  std::vector<int> host(n);
  CHECK_CUDA(cudaMemcpy(host.data(), plain, n * sizeof(int), cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; ++i) EXPECT(host[i] == 7 + i);

  void* rest = nullptr;
  CHECK_CUDA(cudaMalloc(&rest, left));
  EXPECT(freeNow() == 0);
  expectRefused(cudaMalloc(&refused, 256));
  CHECK_CUDA(cudaFree(rest));
  CHECK_CUDA(cudaFreeAsync(streamOrdered, nullptr));
  CHECK_CUDA(cudaFree(pitched));
  CHECK_CUDA(cudaFree(cube.ptr));
  CHECK_CUDA(cudaFree(plain));
  CHECK_CUDA(cudaDeviceSynchronize());
  EXPECT(freeNow() == quota);
  CHECK_CUDA(cudaMalloc(&rest, quota));
  CHECK_CUDA(cudaFree(rest));
  std::printf("memory_quota: all checks passed\n");
  return kExitPassed;
}
