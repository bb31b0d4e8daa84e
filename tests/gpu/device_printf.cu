// Eight device threads print one known line each (integers, a float, hex, a string); the lines are
// listed in device_printf.expected and check_output.sh (CTest) or run_matrix.sh compares them with
// this program's stdout. The program itself checks that the kernel ran and synchronised cleanly.
#include "gpu_check.cuh"

__global__ void greet(const float scale) {
  const int index = blockIdx.x * blockDim.x + threadIdx.x;
  printf("device printf: block %d thread %d index %d value %.3f hex 0x%x %s\n", blockIdx.x,
         threadIdx.x, index, scale * static_cast<float>(index), 0xf00 + index,
         index % 2 == 0 ? "even" : "odd");
}

int main() {
  require_cuda_device();
  greet<<<2, 4>>>(0.25f);
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaDeviceSynchronize());  // the device's printf buffer is flushed here
  std::fflush(stdout);
  return pass("device_printf");
}
