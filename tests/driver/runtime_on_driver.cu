// A CUDA program as nvcc builds it, with NVIDIA's own runtime (linked statically or shared, per
// the build), run through `flyt run --api driver`: the runtime's start-up (export tables,
// integrity check, device enumeration), kernel registration and launches, copies, streams and
// events all go through Flyt's libcuda.so.1. Kernel results are checked where the device is a GPU.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <vector>

#define OK(call)                                                                                       \
  do {                                                                                                 \
    cudaError_t e_ = (call);                                                                           \
    if (e_ != cudaSuccess) {                                                                           \
      std::fprintf(stderr, "FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      return 1;                                                                                        \
    }                                                                                                  \
  } while (0)
#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) {                                                              \
      std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);      \
      return 1;                                                                 \
    }                                                                           \
  } while (0)

__global__ void saxpy(float a, const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

__constant__ float c_bias[4];

__global__ void addBias(float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] += c_bias[i % 4];
}

int main() {
  int count = 0;
  OK(cudaGetDeviceCount(&count));
  CHECK(count >= 1);
  cudaDeviceProp prop{};
  OK(cudaGetDeviceProperties(&prop, 0));
  const bool standIn = std::strstr(prop.name, "stand-in") != nullptr;
  int runtime = 0, driver = 0;
  OK(cudaRuntimeGetVersion(&runtime));
  OK(cudaDriverGetVersion(&driver));
  std::printf("runtime_on_driver: %s, cc %d.%d, runtime %d on driver %d\n", prop.name, prop.major, prop.minor,
              runtime, driver);

  constexpr int n = 1 << 20;
  std::vector<float> x(n), y(n), out(n);
  for (int i = 0; i < n; ++i) {
    x[i] = static_cast<float>(i % 1000);
    y[i] = 1.0f;
  }
  float *dx = nullptr, *dy = nullptr;
  OK(cudaMalloc(&dx, n * sizeof(float)));
  OK(cudaMalloc(&dy, n * sizeof(float)));
  cudaStream_t stream;
  OK(cudaStreamCreate(&stream));
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusActive;
  OK(cudaStreamGetCaptureInfo(stream, &capture));  // PyTorch's allocator asks this on every allocation
  CHECK(capture == cudaStreamCaptureStatusNone);
  cudaEvent_t start, stop;
  OK(cudaEventCreate(&start));
  OK(cudaEventCreate(&stop));
  OK(cudaMemcpyAsync(dx, x.data(), n * sizeof(float), cudaMemcpyHostToDevice, stream));
  OK(cudaMemcpyAsync(dy, y.data(), n * sizeof(float), cudaMemcpyHostToDevice, stream));
  // The stand-in cannot read a module's variables (it has no loader for them): bias stays zero there.
  const float bias[4] = {0.0f, 0.25f, 0.5f, 0.75f};
  if (!standIn) OK(cudaMemcpyToSymbol(c_bias, bias, sizeof bias));
  OK(cudaEventRecord(start, stream));
  saxpy<<<(n + 255) / 256, 256, 0, stream>>>(2.0f, dx, dy, n);
  OK(cudaGetLastError());
  addBias<<<(n + 255) / 256, 256, 0, stream>>>(dy, n);
  OK(cudaGetLastError());
  OK(cudaEventRecord(stop, stream));
  OK(cudaMemcpyAsync(out.data(), dy, n * sizeof(float), cudaMemcpyDeviceToHost, stream));
  OK(cudaStreamSynchronize(stream));
  float ms = -1;
  OK(cudaEventElapsedTime(&ms, start, stop));
  CHECK(ms >= 0);
  if (!standIn) {
    for (int i = 0; i < n; ++i) CHECK(out[i] == 2.0f * x[i] + 1.0f + bias[i % 4]);
  } else {
    CHECK(out == y);  // kernels do not run on the stand-in: y came back as it went
  }
  OK(cudaMemset(dy, 0, n * sizeof(float)));
  OK(cudaMemcpy(out.data(), dy, 64, cudaMemcpyDeviceToHost));
  CHECK(out[0] == 0.0f && out[15] == 0.0f);
  size_t freeBytes = 0, totalBytes = 0;
  OK(cudaMemGetInfo(&freeBytes, &totalBytes));
  CHECK(freeBytes <= totalBytes);
  // Bad input is refused (NVIDIA's runtime checks a free at once), and the program goes on.
  CHECK(cudaFree(reinterpret_cast<void*>(0x1000)) != cudaSuccess);
  (void)cudaGetLastError();
  OK(cudaFree(dx));
  OK(cudaFree(dy));
  OK(cudaStreamDestroy(stream));
  OK(cudaEventDestroy(start));
  OK(cudaEventDestroy(stop));
  OK(cudaDeviceSynchronize());
  std::printf("runtime_on_driver: all checks passed\n");
  return 0;
}
