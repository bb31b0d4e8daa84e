// Separable compilation (CMake's CUDA_SEPARABLE_COMPILATION, nvcc -rdc): the kernel here calls a
// device function and reads a __device__ variable defined in separable_lib.cu; nvcc's device link
// step joins them, and the runtime registers the linked image.
#include <vector>

#include "../gpu_check.cuh"

extern __device__ int g_offset;
__device__ int scaled(int v);

__global__ void apply(int* p, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] = scaled(p[i]) + g_offset;
}

int main() {
  require_cuda_device();
  constexpr int n = 4096;
  std::vector<int> host(n);
  for (int i = 0; i < n; ++i) host[i] = i;
  int* d;
  CHECK_CUDA(cudaMalloc(&d, n * 4));
  CHECK_CUDA(cudaMemcpy(d, host.data(), n * 4, cudaMemcpyHostToDevice));
  const int offset = 11;
  CHECK_CUDA(cudaMemcpyToSymbol(g_offset, &offset, sizeof offset));
  apply<<<n / 256, 256>>>(d, n);
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaMemcpy(host.data(), d, n * 4, cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; ++i) {
    if (host[i] != 3 * i + 11) return fail("separable", "p[%d] = %d, expected %d", i, host[i], 3 * i + 11);
  }
  CHECK_CUDA(cudaFree(d));
  return pass("separable");
}
