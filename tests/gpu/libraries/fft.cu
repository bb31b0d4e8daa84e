// cuFFT: a 1D complex-to-complex transform of 4096 points and its inverse (the input comes back,
// times N), and a real-to-complex transform of a pure tone (one bin holds all the energy).
#include <cufft.h>

#include <cmath>
#include <vector>

#include "library_check.cuh"

#define CHECK_FFT(call) CHECK_LIBRARY(call, CUFFT_SUCCESS, statusNumber)

int main() {
  require_cuda_device();
  constexpr int n = 4096;
  std::vector<cufftComplex> x(n), y(n);
  for (int i = 0; i < n; ++i) x[i] = {std::sin(0.01f * i), std::cos(0.003f * i)};
  cufftComplex* dx;
  CHECK_CUDA(cudaMalloc(&dx, n * sizeof(cufftComplex)));
  CHECK_CUDA(cudaMemcpy(dx, x.data(), n * sizeof(cufftComplex), cudaMemcpyHostToDevice));
  cufftHandle plan;
  CHECK_FFT(cufftPlan1d(&plan, n, CUFFT_C2C, 1));
  CHECK_FFT(cufftExecC2C(plan, dx, dx, CUFFT_FORWARD));
  CHECK_FFT(cufftExecC2C(plan, dx, dx, CUFFT_INVERSE));
  CHECK_CUDA(cudaMemcpy(y.data(), dx, n * sizeof(cufftComplex), cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; ++i) {
    if (std::fabs(y[i].x / n - x[i].x) > 1e-4f || std::fabs(y[i].y / n - x[i].y) > 1e-4f) {
      return fail("fft", "round trip [%d] = (%f, %f), expected (%f, %f)", i, y[i].x / n, y[i].y / n, x[i].x, x[i].y);
    }
  }
  CHECK_FFT(cufftDestroy(plan));

  constexpr int bin = 37;
  std::vector<float> tone(n);
  for (int i = 0; i < n; ++i) tone[i] = std::cos(2.0 * M_PI * bin * i / n);
  float* dt;
  cufftComplex* dspectrum;
  CHECK_CUDA(cudaMalloc(&dt, n * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&dspectrum, (n / 2 + 1) * sizeof(cufftComplex)));
  CHECK_CUDA(cudaMemcpy(dt, tone.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  CHECK_FFT(cufftPlan1d(&plan, n, CUFFT_R2C, 1));
  CHECK_FFT(cufftExecR2C(plan, dt, dspectrum));
  std::vector<cufftComplex> spectrum(n / 2 + 1);
  CHECK_CUDA(cudaMemcpy(spectrum.data(), dspectrum, spectrum.size() * sizeof(cufftComplex), cudaMemcpyDeviceToHost));
  for (int i = 0; i <= n / 2; ++i) {
    const float magnitude = std::hypot(spectrum[i].x, spectrum[i].y);
    const float expected = i == bin ? n / 2.0f : 0.0f;
    if (std::fabs(magnitude - expected) > 0.05f) return fail("fft", "|X[%d]| = %f, expected %f", i, magnitude, expected);
  }
  CHECK_FFT(cufftDestroy(plan));
  return pass("fft");
}
