// Thrust and CUB as header libraries compile them into the program: thrust::sort, reduce and
// transform on device vectors, and cub::DeviceScan's two-phase temporary-storage call.
#include <cub/device/device_scan.cuh>
#include <thrust/device_vector.h>
#include <thrust/functional.h>
#include <thrust/reduce.h>
#include <thrust/sort.h>
#include <thrust/transform.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "../gpu_check.cuh"

struct Square {
  __host__ __device__ long long operator()(int v) const { return static_cast<long long>(v) * v; }
};

int main() {
  require_cuda_device();
  constexpr int n = 1 << 20;
  std::vector<int> host(n);
  for (int i = 0; i < n; ++i) host[i] = static_cast<int>((i * 2654435761u) % 1000003u);
  thrust::device_vector<int> d(host.begin(), host.end());
  thrust::sort(d.begin(), d.end());
  std::vector<int> sorted = host;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int> got(n);
  thrust::copy(d.begin(), d.end(), got.begin());
  if (got != sorted) return fail("thrust_cub", "thrust::sort differs from std::sort");
  const long long sum = thrust::reduce(d.begin(), d.end(), 0LL, thrust::plus<long long>());
  if (sum != std::accumulate(host.begin(), host.end(), 0LL)) return fail("thrust_cub", "thrust::reduce = %lld", sum);
  thrust::device_vector<long long> squares(n);
  thrust::transform(d.begin(), d.end(), squares.begin(), Square());
  const long long squareSum = thrust::reduce(squares.begin(), squares.end(), 0LL);
  long long want = 0;
  for (int v : host) want += static_cast<long long>(v) * v;
  if (squareSum != want) return fail("thrust_cub", "sum of squares %lld, expected %lld", squareSum, want);

  int* in = thrust::raw_pointer_cast(d.data());
  thrust::device_vector<int> outVector(n);
  int* out = thrust::raw_pointer_cast(outVector.data());
  void* temp = nullptr;
  size_t tempBytes = 0;
  thrust::device_vector<int> ones(n, 1);
  CHECK_CUDA(cub::DeviceScan::InclusiveSum(temp, tempBytes, thrust::raw_pointer_cast(ones.data()), out, n));
  CHECK_CUDA(cudaMalloc(&temp, tempBytes));
  CHECK_CUDA(cub::DeviceScan::InclusiveSum(temp, tempBytes, thrust::raw_pointer_cast(ones.data()), out, n));
  CHECK_CUDA(cudaDeviceSynchronize());
  thrust::copy(outVector.begin(), outVector.end(), got.begin());
  for (int i = 0; i < n; ++i) {
    if (got[i] != i + 1) return fail("thrust_cub", "inclusive scan [%d] = %d", i, got[i]);
  }
  (void)in;
  CHECK_CUDA(cudaFree(temp));
  return pass("thrust_cub");
}
