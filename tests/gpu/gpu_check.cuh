// Shared by the GPU acceptance programs in this folder. Each program is an ordinary CUDA program
// (nvcc -cudart shared) that knows nothing about Flyt. Exit status: 0 passed, 1 failed, 77 skipped
// (no CUDA device).
#pragma once

#include <cuda_runtime.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>

constexpr int kExitPassed = 0;
constexpr int kExitFailed = 1;
constexpr int kExitSkipped = 77;

// Aborts the program (exit 1) with the call, its error name and message when a CUDA call fails.
#define CHECK_CUDA(call)                                                                       \
  do {                                                                                         \
    const cudaError_t check_cuda_error_ = (call);                                              \
    if (check_cuda_error_ != cudaSuccess) {                                                    \
      std::fprintf(stderr, "FAIL %s:%d: %s returned %s (%s)\n", __FILE__, __LINE__, #call,      \
                   cudaGetErrorName(check_cuda_error_), cudaGetErrorString(check_cuda_error_)); \
      std::exit(kExitFailed);                                                                  \
    }                                                                                          \
  } while (0)

// Exits 77 (skipped) when there is no usable CUDA device: cudaGetDeviceCount fails or finds none.
inline void require_cuda_device() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  if (error != cudaSuccess || count == 0) {
    std::printf("no CUDA device: skipped (cudaGetDeviceCount: %s, %d devices)\n",
                cudaGetErrorName(error), count);
    std::fflush(stdout);
    std::exit(kExitSkipped);
  }
}

// Reports a mismatch on stderr and returns kExitFailed, for `return fail(...)` in main.
inline int fail(const char* program, const char* format, ...) {
  std::fprintf(stderr, "FAIL %s: ", program);
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::fputc('\n', stderr);
  return kExitFailed;
}

inline int pass(const char* program) {
  std::printf("PASS %s\n", program);
  return kExitPassed;
}
