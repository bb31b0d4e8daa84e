// Page-locked host memory: cudaMallocHost and cudaHostAlloc (default, portable and write-combined
// flags, read back with cudaHostGetFlags), synchronous and asynchronous copies between pinned
// buffers and the device, a device-to-device copy, and cudaFreeHost.
#include "gpu_check.cuh"

__global__ void add_index(int* data, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) data[i] += i;
}

int main() {
  require_cuda_device();
  constexpr int n = 1 << 20;
  constexpr size_t bytes = n * sizeof(int);

  int* from_malloc_host = nullptr;
  int* portable = nullptr;
  int* write_combined = nullptr;
  CHECK_CUDA(cudaMallocHost(&from_malloc_host, bytes));
  CHECK_CUDA(cudaHostAlloc(&portable, bytes, cudaHostAllocPortable));
  CHECK_CUDA(cudaHostAlloc(&write_combined, bytes, cudaHostAllocWriteCombined));
  unsigned int flags = 0;
  CHECK_CUDA(cudaHostGetFlags(&flags, portable));
  if ((flags & cudaHostAllocPortable) == 0)
    return fail("pinned_memory", "cudaHostGetFlags = 0x%x lacks cudaHostAllocPortable", flags);
  CHECK_CUDA(cudaHostGetFlags(&flags, write_combined));
  if ((flags & cudaHostAllocWriteCombined) == 0)
    return fail("pinned_memory", "cudaHostGetFlags = 0x%x lacks cudaHostAllocWriteCombined",
                flags);

  for (int i = 0; i < n; ++i) write_combined[i] = 3 * i;  // write-combined: written, not read
  int *device_a = nullptr, *device_b = nullptr;
  CHECK_CUDA(cudaMalloc(&device_a, bytes));
  CHECK_CUDA(cudaMalloc(&device_b, bytes));

  // Synchronous: write-combined -> device, kernel, device -> cudaMallocHost buffer.
  CHECK_CUDA(cudaMemcpy(device_a, write_combined, bytes, cudaMemcpyHostToDevice));
  add_index<<<(n + 255) / 256, 256>>>(device_a, n);
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaMemcpy(from_malloc_host, device_a, bytes, cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; ++i)
    if (from_malloc_host[i] != 4 * i)
      return fail("pinned_memory", "sync round trip [%d] = %d, expected %d", i,
                  from_malloc_host[i], 4 * i);

  // Asynchronous on a stream: pinned -> device, device -> device, kernel, device -> portable.
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  CHECK_CUDA(cudaMemcpyAsync(device_a, from_malloc_host, bytes, cudaMemcpyHostToDevice, stream));
  CHECK_CUDA(cudaMemcpyAsync(device_b, device_a, bytes, cudaMemcpyDeviceToDevice, stream));
  add_index<<<(n + 255) / 256, 256, 0, stream>>>(device_b, n);
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaMemsetAsync(device_a, 0, bytes, stream));
  CHECK_CUDA(cudaMemcpyAsync(portable, device_b, bytes, cudaMemcpyDeviceToHost, stream));
  CHECK_CUDA(cudaMemcpyAsync(from_malloc_host, device_a, bytes, cudaMemcpyDeviceToHost, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  for (int i = 0; i < n; ++i) {
    if (portable[i] != 5 * i)
      return fail("pinned_memory", "async round trip [%d] = %d, expected %d", i, portable[i],
                  5 * i);
    if (from_malloc_host[i] != 0)
      return fail("pinned_memory", "memset buffer [%d] = %d, expected 0", i, from_malloc_host[i]);
  }

  CHECK_CUDA(cudaStreamDestroy(stream));
  CHECK_CUDA(cudaFree(device_a));
  CHECK_CUDA(cudaFree(device_b));
  CHECK_CUDA(cudaFreeHost(from_malloc_host));
  CHECK_CUDA(cudaFreeHost(portable));
  CHECK_CUDA(cudaFreeHost(write_combined));
  return pass("pinned_memory");
}
