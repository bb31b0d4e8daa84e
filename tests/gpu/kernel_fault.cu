// A kernel that writes through an address no allocation covers. The launch succeeds; the next
// synchronising call must return cudaErrorIllegalAddress (or cudaErrorLaunchFailure, the older
// report of the same fault), and the error is sticky. Exits 0 only when the program sees that.
#include "gpu_check.cuh"

__global__ void write_through(int* pointer, int value) { *pointer = value; }

int main() {
  require_cuda_device();
  int* illegal = reinterpret_cast<int*>(0x10);  // the first page is never mapped on the device
  write_through<<<1, 1>>>(illegal, 42);
  const cudaError_t launch = cudaGetLastError();
  if (launch != cudaSuccess)
    return fail("kernel_fault", "the launch itself failed: %s", cudaGetErrorName(launch));

  const cudaError_t sync = cudaDeviceSynchronize();
  if (sync != cudaErrorIllegalAddress && sync != cudaErrorLaunchFailure)
    return fail("kernel_fault",
                "cudaDeviceSynchronize returned %s, expected cudaErrorIllegalAddress or "
                "cudaErrorLaunchFailure",
                cudaGetErrorName(sync));
  std::printf("cudaDeviceSynchronize returned %s as expected\n", cudaGetErrorName(sync));

  void* more = nullptr;
  const cudaError_t after = cudaMalloc(&more, 256);
  if (after == cudaSuccess)
    return fail("kernel_fault", "cudaMalloc succeeded after the fault (error not sticky)");
  std::printf("a later cudaMalloc returned %s as expected\n", cudaGetErrorName(after));
  return pass("kernel_fault");
}
