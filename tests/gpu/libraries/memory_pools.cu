// Stream-ordered allocation: cudaMallocAsync/cudaFreeAsync from the device's default pool and from
// a created pool with a release threshold, used by kernels in stream order, and the pool's
// attributes (reserved and used memory).
#include <vector>

#include "../gpu_check.cuh"

__global__ void fill(int* p, int value, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] = value + i;
}

int main() {
  require_cuda_device();
  constexpr int n = 1 << 20;
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  std::vector<int> got(n);
  for (int round = 0; round < 4; ++round) {
    int* p = nullptr;
    CHECK_CUDA(cudaMallocAsync(&p, n * 4, stream));
    fill<<<n / 256, 256, 0, stream>>>(p, round * 10, n);
    CHECK_CUDA(cudaMemcpyAsync(got.data(), p, n * 4, cudaMemcpyDeviceToHost, stream));
    CHECK_CUDA(cudaFreeAsync(p, stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
    for (int i = 0; i < n; ++i) {
      if (got[i] != round * 10 + i) return fail("memory_pools", "round %d [%d] = %d", round, i, got[i]);
    }
  }
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = 0;
  cudaMemPool_t pool;
  CHECK_CUDA(cudaMemPoolCreate(&pool, &props));
  unsigned long long threshold = 64ull << 20;
  CHECK_CUDA(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  int* p = nullptr;
  CHECK_CUDA(cudaMallocFromPoolAsync(reinterpret_cast<void**>(&p), n * 4, pool, stream));
  fill<<<n / 256, 256, 0, stream>>>(p, 7, n);
  CHECK_CUDA(cudaStreamSynchronize(stream));
  unsigned long long used = 0, reserved = 0;
  CHECK_CUDA(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrUsedMemCurrent, &used));
  CHECK_CUDA(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
  if (used < n * 4ull || reserved < used) return fail("memory_pools", "pool used %llu, reserved %llu", used, reserved);
  CHECK_CUDA(cudaMemcpy(got.data(), p, n * 4, cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; ++i) {
    if (got[i] != 7 + i) return fail("memory_pools", "pool allocation [%d] = %d", i, got[i]);
  }
  CHECK_CUDA(cudaFreeAsync(p, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  CHECK_CUDA(cudaMemPoolTrimTo(pool, 0));
  CHECK_CUDA(cudaMemPoolDestroy(pool));
  CHECK_CUDA(cudaStreamDestroy(stream));
  return pass("memory_pools");
}
