// Managed memory: written by the host, changed by a kernel, read and written again by the host,
// with and without a prefetch to the device (cudaMemPrefetchAsync) and a read-mostly advice.
#include "../gpu_check.cuh"

__global__ void twice(int* p, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] = 2 * p[i] + 1;
}

int main() {
  require_cuda_device();
  constexpr int n = 1 << 20;
  int* p = nullptr;
  CHECK_CUDA(cudaMallocManaged(&p, n * sizeof(int)));
  for (int i = 0; i < n; ++i) p[i] = i;
  twice<<<n / 256, 256>>>(p, n);
  CHECK_CUDA(cudaDeviceSynchronize());
  for (int i = 0; i < n; ++i) {
    if (p[i] != 2 * i + 1) return fail("managed", "after the kernel p[%d] = %d", i, p[i]);
  }
  for (int i = 0; i < n; i += 4096) p[i] = -1;  // the host again, sparsely
  cudaMemLocation device{};
  device.type = cudaMemLocationTypeDevice;
  device.id = 0;
  CHECK_CUDA(cudaMemPrefetchAsync(p, n * sizeof(int), device, 0, 0));
  twice<<<n / 256, 256>>>(p, n);
  CHECK_CUDA(cudaDeviceSynchronize());
  for (int i = 0; i < n; ++i) {
    const int want = i % 4096 == 0 ? -1 : 2 * (2 * i + 1) + 1;
    if (p[i] != want) return fail("managed", "after the prefetch p[%d] = %d, expected %d", i, p[i], want);
  }
  CHECK_CUDA(cudaMemAdvise(p, n * sizeof(int), cudaMemAdviseSetReadMostly, device));
  long long sum = 0;
  for (int i = 0; i < n; ++i) sum += p[i];
  if (sum == 0) return fail("managed", "sum is 0");
  CHECK_CUDA(cudaFree(p));
  return pass("managed");
}
