// A compute-bound kernel timed with events, to see a session's SM share at work: run it natively
// and through a node with --session-sm-percent P (green context) or under MPS; the kernel time
// grows roughly as 100/P. The grid fills every SM of the whole GPU several times over whatever
// multiProcessorCount is reported, so a smaller share really means fewer SMs doing the same work.
//   sm_share [ITERATIONS]   (default 2000000: about 200-500 ms on a whole H100/H200)
// Prints "sm_share: multiProcessorCount=<n> kernel_ms=<t>"; exit 0 when the results are right,
// 1 when not, 77 without a CUDA device.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "gpu_check.cuh"

namespace {

constexpr int kThreads = 256;
constexpr int kBlocks = 132 * 16;  // 16 blocks per SM of a whole H100/H200 SXM (132 SMs)

// Four independent FMA chains per thread, each converging to 1 (x = 0.999 x + 0.001).
__global__ void spin(float* out, int iterations) {
  float a = 0.5f + threadIdx.x * 1e-4f, b = 0.25f, c = 0.75f, d = 2.0f;
  for (int i = 0; i < iterations; ++i) {
    a = fmaf(a, 0.999f, 0.001f);
    b = fmaf(b, 0.999f, 0.001f);
    c = fmaf(c, 0.999f, 0.001f);
    d = fmaf(d, 0.999f, 0.001f);
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = (a + b + c + d) * 0.25f;
}

}  // namespace

int main(int argc, char** argv) {
  require_cuda_device();
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 2000000;
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const size_t count = size_t(kBlocks) * kThreads;
  float* out = nullptr;
  CHECK_CUDA(cudaMalloc(&out, count * sizeof(float)));
  spin<<<kBlocks, kThreads>>>(out, 1000);  // warm-up: module load, clocks
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaDeviceSynchronize());
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  CHECK_CUDA(cudaEventRecord(start));
  spin<<<kBlocks, kThreads>>>(out, iterations);
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaEventRecord(stop));
  CHECK_CUDA(cudaEventSynchronize(stop));
  float ms = 0;
  CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
  std::vector<float> host(count);
  CHECK_CUDA(cudaMemcpy(host.data(), out, count * sizeof(float), cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < count; ++i) {
    if (!(host[i] > 0.99f && host[i] < 1.01f)) {
      std::fprintf(stderr, "FAIL: out[%zu] = %f, expected 1\n", i, host[i]);
      return kExitFailed;
    }
  }
  std::printf("sm_share: multiProcessorCount=%d kernel_ms=%.1f\n", prop.multiProcessorCount, ms);
  CHECK_CUDA(cudaFree(out));
  return kExitPassed;
}
