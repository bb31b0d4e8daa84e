// cuRAND's host API: the device generators' sequences equal the same generators run on the host
// (curandCreateGeneratorHost), for uniform and normal numbers.
#include <curand.h>

#include <cmath>
#include <vector>

#include "library_check.cuh"

#define CHECK_RAND(call) CHECK_LIBRARY(call, CURAND_STATUS_SUCCESS, statusNumber)

int main() {
  require_cuda_device();
  constexpr size_t n = 1 << 20;
  for (curandRngType_t type : {CURAND_RNG_PSEUDO_PHILOX4_32_10, CURAND_RNG_PSEUDO_XORWOW}) {
    curandGenerator_t device, host;
    CHECK_RAND(curandCreateGenerator(&device, type));
    CHECK_RAND(curandCreateGeneratorHost(&host, type));
    CHECK_RAND(curandSetPseudoRandomGeneratorSeed(device, 1234));
    CHECK_RAND(curandSetPseudoRandomGeneratorSeed(host, 1234));
    float* d;
    CHECK_CUDA(cudaMalloc(&d, n * sizeof(float)));
    std::vector<float> got(n), want(n);
    CHECK_RAND(curandGenerateUniform(device, d, n));
    CHECK_RAND(curandGenerateUniform(host, want.data(), n));
    CHECK_CUDA(cudaMemcpy(got.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    double mean = 0;
    for (size_t i = 0; i < n; ++i) {
      if (got[i] != want[i]) return fail("rand", "uniform[%zu] = %f on the device, %f on the host", i, got[i], want[i]);
      mean += got[i];
    }
    if (std::fabs(mean / n - 0.5) > 0.01) return fail("rand", "uniform mean %f", mean / n);
    CHECK_RAND(curandGenerateNormal(device, d, n, 0.0f, 1.0f));
    CHECK_RAND(curandGenerateNormal(host, want.data(), n, 0.0f, 1.0f));
    CHECK_CUDA(cudaMemcpy(got.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; ++i) {
      if (std::fabs(got[i] - want[i]) > 1e-5f) return fail("rand", "normal[%zu] = %f on the device, %f on the host", i, got[i], want[i]);
    }
    CHECK_CUDA(cudaFree(d));
    CHECK_RAND(curandDestroyGenerator(device));
    CHECK_RAND(curandDestroyGenerator(host));
  }
  return pass("rand");
}
