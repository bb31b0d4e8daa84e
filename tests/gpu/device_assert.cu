// A kernel in which one thread fails an assert. The launch itself succeeds; the next synchronising
// call must return cudaErrorAssert, and the error is sticky: later calls fail too. Exits 0 only
// when the program sees exactly that.
#undef NDEBUG  // device asserts are compiled out under NDEBUG, which release builds define
#include <cassert>

#include "gpu_check.cuh"

__global__ void check_values(const int* values, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) assert(values[i] != 3 && "this assert fails on purpose");
}

int main() {
  require_cuda_device();
  constexpr int n = 64;
  int host[n];
  for (int i = 0; i < n; ++i) host[i] = i;  // host[3] == 3 trips the assert
  int* device = nullptr;
  CHECK_CUDA(cudaMalloc(&device, sizeof host));
  CHECK_CUDA(cudaMemcpy(device, host, sizeof host, cudaMemcpyHostToDevice));

  check_values<<<2, 32>>>(device, n);
  const cudaError_t launch = cudaGetLastError();
  if (launch != cudaSuccess)
    return fail("device_assert", "the launch itself failed: %s", cudaGetErrorName(launch));

  const cudaError_t sync = cudaDeviceSynchronize();
  if (sync != cudaErrorAssert)
    return fail("device_assert", "cudaDeviceSynchronize returned %s, expected cudaErrorAssert",
                cudaGetErrorName(sync));
  std::printf("cudaDeviceSynchronize returned %s as expected\n", cudaGetErrorName(sync));

  void* more = nullptr;
  const cudaError_t after = cudaMalloc(&more, 256);
  if (after == cudaSuccess)
    return fail("device_assert", "cudaMalloc succeeded after a device assert (error not sticky)");
  std::printf("a later cudaMalloc returned %s as expected\n", cudaGetErrorName(after));
  return pass("device_assert");
}
