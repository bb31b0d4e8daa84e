// Exercises kernel registration, launches (<<<>>> with struct, char, double and pointer arguments,
// a kernel without parameters, cudaLaunchKernel, a stream) and __device__/__constant__ variables
// through whatever libcudart.so.13 the program loads. Run under `flyt run`: on the GPU stand-in (a
// test double that executes no kernel, CI) every launch is accepted but computes nothing, while
// symbol copies round-trip; the stand-in prints each launch's packed parameters, which
// check_launch_packing.py compares with the values used here. On a GPU the results are checked.
// Exit 0 when every check holds, 1 with a FAIL line otherwise.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>

#include "standin_check.h"

struct Params {
  int a;
  double b;
  char c;
  float v[3];
};

__constant__ float c_scale[4];
__device__ int d_counter;

// out[0..6] = p.a, p.b, p.c, p.v[0..2] (scaled by c_scale[0]), then c, d.
__global__ void mixed(Params p, char c, double d, double* out) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  out[0] = p.a;
  out[1] = p.b;
  out[2] = p.c;
  for (int i = 0; i < 3; ++i) out[3 + i] = p.v[i] * c_scale[0];
  out[6] = c;
  out[7] = d;
}

__global__ void count() { atomicAdd(&d_counter, 1); }

// Arguments of several sizes and alignments (check_launch_packing.py knows the values below).
struct S12 {
  int a;
  float b;
  char c;
};
struct Big {
  unsigned char bytes[1024];
};
__global__ void packing(S12 s, char c, double d, const void* tag, Big big, short h, unsigned long long* out) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  unsigned long long sum = 0;
  for (int i = 0; i < 1024; ++i) sum += (i + 1ULL) * big.bytes[i];
  out[0] = s.a;
  out[1] = __float_as_uint(s.b);
  out[2] = s.c;
  out[3] = c;
  out[4] = __double_as_longlong(d);
  out[5] = reinterpret_cast<unsigned long long>(tag);
  out[6] = sum;
  out[7] = h;
}

// Launches `packing` once; on a GPU checks what it saw, on the stand-in that nothing ran.
static int launchPacking(bool standIn) {
  unsigned long long* out = nullptr;
  OK(cudaMalloc(&out, 8 * sizeof(unsigned long long)));
  OK(cudaMemset(out, 0, 8 * sizeof(unsigned long long)));
  S12 s;
  std::memset(&s, 0, sizeof s);
  s.a = 0x01020304;
  s.b = -2.5f;
  s.c = 'S';
  Big big;
  unsigned long long sum = 0;
  for (int i = 0; i < 1024; ++i) {
    big.bytes[i] = static_cast<unsigned char>(i * 7 + 3);
    sum += (i + 1ULL) * big.bytes[i];
  }
  const void* tag = reinterpret_cast<const void*>(0x1122334455667788ULL);  // never dereferenced
  std::printf("launch_path: packing out=%p\n", static_cast<void*>(out));
  std::fflush(stdout);
  packing<<<dim3(2, 3, 1), dim3(64, 2, 1), 128>>>(s, 'c', 6.125, tag, big, short(-12345), out);
  CHECK(cudaGetLastError() == cudaSuccess);
  OK(cudaDeviceSynchronize());
  unsigned long long result[8] = {};
  OK(cudaMemcpy(result, out, sizeof result, cudaMemcpyDeviceToHost));
  if (standIn) {
    for (unsigned long long v : result) CHECK(v == 0);
  } else {
    float b = -2.5f;
    unsigned bBits = 0;
    std::memcpy(&bBits, &b, sizeof bBits);
    double d = 6.125;
    unsigned long long dBits = 0;
    std::memcpy(&dBits, &d, sizeof dBits);
    CHECK(result[0] == 0x01020304 && result[1] == bBits && result[2] == 'S' && result[3] == 'c');
    CHECK(result[4] == dBits && result[5] == 0x1122334455667788ULL && result[6] == sum);
    CHECK(static_cast<short>(result[7]) == -12345);
  }
  OK(cudaFree(out));
  return 0;
}

static bool near(double a, double b) { return a - b < 1e-6 && b - a < 1e-6; }

int main() {
  cudaDeviceProp prop{};
  OK(cudaGetDeviceProperties(&prop, 0));
  const bool standIn = std::strstr(prop.name, "stand-in") != nullptr;
  std::printf("device: %s (%s)\n", prop.name, standIn ? "stand-in: kernels are not run" : "GPU");
  const cudaError_t launched = cudaSuccess;  // the stand-in accepts launches too

  // Variables: sizes known locally, addresses and contents through the worker.
  size_t size = 0;
  OK(cudaGetSymbolSize(&size, c_scale));
  CHECK(size == sizeof(float) * 4);
  void* address = nullptr;
  OK(cudaGetSymbolAddress(&address, d_counter));
  CHECK(address != nullptr);
  const float scale[4] = {2.0f, 3.0f, 4.0f, 5.0f};
  OK(cudaMemcpyToSymbol(c_scale, scale, sizeof scale));
  float back[2] = {};
  OK(cudaMemcpyFromSymbol(back, c_scale, sizeof back, 2 * sizeof(float)));
  CHECK(back[0] == 4.0f && back[1] == 5.0f);
  CHECK(cudaMemcpyToSymbol(c_scale, scale, sizeof scale, sizeof(float)) == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  const int zero = 0;
  OK(cudaMemcpyToSymbol(d_counter, &zero, sizeof zero));

  double* out = nullptr;
  OK(cudaMalloc(&out, 8 * sizeof(double)));
  OK(cudaMemset(out, 0, 8 * sizeof(double)));

  // <<<>>> with a struct, a char, a double and a pointer.
  std::printf("launch_path: mixed out=%p\n", static_cast<void*>(out));
  std::fflush(stdout);
  const Params p{-7, 1.25, 'q', {1.0f, 2.0f, 3.0f}};
  mixed<<<1, 32>>>(p, 'z', 2.5, out);
  CHECK(cudaGetLastError() == launched);
  OK(cudaDeviceSynchronize());
  if (standIn) {  // accepted, not run
    double result[8] = {};
    OK(cudaMemcpy(result, out, sizeof result, cudaMemcpyDeviceToHost));
    for (double v : result) CHECK(v == 0);
  } else {
    double result[8] = {};
    OK(cudaMemcpy(result, out, sizeof result, cudaMemcpyDeviceToHost));
    CHECK(near(result[0], -7) && near(result[1], 1.25) && near(result[2], 'q'));
    CHECK(near(result[3], 2) && near(result[4], 4) && near(result[5], 6));
    CHECK(near(result[6], 'z') && near(result[7], 2.5));
  }

  // A kernel without parameters, on a stream, twice.
  cudaStream_t stream{};
  OK(cudaStreamCreate(&stream));
  count<<<2, 64, 0, stream>>>();
  count<<<3, 32>>>();
  CHECK(cudaGetLastError() == launched);
  OK(cudaStreamSynchronize(stream));
  OK(cudaDeviceSynchronize());
  int counted = -1;
  OK(cudaMemcpyFromSymbol(&counted, d_counter, sizeof counted));
  CHECK(counted == (standIn ? 0 : 2 * 64 + 3 * 32));

  // cudaLaunchKernel with an explicit argument array.
  Params q{40, -0.5, 'k', {0.5f, 0.25f, 0.125f}};
  char c = 'm';
  double d = -3.75;
  void* args[] = {&q, &c, &d, &out};
  CHECK(cudaLaunchKernel(reinterpret_cast<const void*>(mixed), dim3(1), dim3(1), args, 0, stream) == launched);
  CHECK(cudaGetLastError() == launched);
  OK(cudaStreamSynchronize(stream));
  if (!standIn) {
    double result[8] = {};
    OK(cudaMemcpy(result, out, sizeof result, cudaMemcpyDeviceToHost));
    CHECK(near(result[0], 40) && near(result[1], -0.5) && near(result[2], 'k'));
    CHECK(near(result[3], 1) && near(result[4], 0.5) && near(result[5], 0.25));
    CHECK(near(result[6], 'm') && near(result[7], -3.75));
  }

  // A configuration no device accepts is refused at once.
  count<<<0, 32>>>();
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  CHECK(cudaLaunchKernel(reinterpret_cast<const void*>(count), dim3(1), dim3(0), nullptr, 0, nullptr) ==
        cudaErrorInvalidConfiguration);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);

  if (launchPacking(standIn) != 0) return 1;

  OK(cudaStreamDestroy(stream));
  OK(cudaFree(out));
  std::printf("launch_path: all checks passed\n");
  return 0;
}
