// Exercises memory, copies, streams, events and error semantics through whatever libcudart.so.13
// the program loads. Run under `flyt run` it goes through Flyt's client, a transport and a worker;
// in CI the worker's executor is the GPU stand-in (a test double), on a GPU host the real GPU.
// Exit 0 when every check holds, 1 with a FAIL line otherwise.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "standin_check.h"

int main() {
  int count = 0;
  OK(cudaGetDeviceCount(&count));
  CHECK(count >= 1);
  OK(cudaSetDevice(0));
  cudaDeviceProp prop{};
  OK(cudaGetDeviceProperties(&prop, 0));
  CHECK(prop.multiProcessorCount > 0);
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);

  size_t freeBefore = 0, total = 0;
  OK(cudaMemGetInfo(&freeBefore, &total));
  CHECK(total > 0 && freeBefore <= total);

  // 3 MiB: more than one inline payload on shared memory, so the copy is split.
  const size_t n = 3 * 1024 * 1024 + 17;
  std::vector<unsigned char> host(n), back(n, 0);
  for (size_t i = 0; i < n; ++i) host[i] = static_cast<unsigned char>(i * 7 + 3);
  unsigned char* a = nullptr;
  unsigned char* b = nullptr;
  OK(cudaMalloc(&a, n));
  OK(cudaMalloc(&b, n));
  OK(cudaMemcpy(a, host.data(), n, cudaMemcpyHostToDevice));
  OK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
  OK(cudaMemset(b + 100, 0xab, 50));
  OK(cudaMemcpy(back.data(), b, n, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < n; ++i) {
    const unsigned char want = (i >= 100 && i < 150) ? 0xab : host[i];
    if (back[i] != want) {
      std::fprintf(stderr, "FAIL byte %zu: %d != %d\n", i, back[i], want);
      return 1;
    }
  }

  // Streams and events.
  cudaStream_t stream{};
  OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t start{}, stop{};
  OK(cudaEventCreate(&start));
  OK(cudaEventCreate(&stop));
  OK(cudaEventRecord(start, stream));
  OK(cudaMemsetAsync(a, 1, 4096, stream));
  OK(cudaEventRecord(stop, stream));
  OK(cudaStreamSynchronize(stream));
  OK(cudaEventSynchronize(stop));
  float ms = -1;
  OK(cudaEventElapsedTime(&ms, start, stop));
  CHECK(ms >= 0);
  OK(cudaEventDestroy(start));
  OK(cudaEventDestroy(stop));
  OK(cudaStreamDestroy(stream));

  // A copy outside every allocation is refused with an error, and the session goes on.
  CHECK(cudaMemcpy(back.data(), a + n, 16, cudaMemcpyDeviceToHost) != cudaSuccess);
  CHECK(cudaGetLastError() != cudaSuccess);
  CHECK(cudaGetLastError() == cudaSuccess);  // reset by the previous call
  CHECK(std::strcmp(cudaGetErrorName(cudaErrorMemoryAllocation), "cudaErrorMemoryAllocation") == 0);

  // An asynchronous call's error surfaces later: from the next synchronising call, and as the
  // thread's last error.
  OK(cudaFree(reinterpret_cast<void*>(0x1000)));  // batched: not waited for
  CHECK(cudaDeviceSynchronize() == cudaErrorInvalidValue);
  CHECK(cudaPeekAtLastError() != cudaSuccess);
  CHECK(cudaGetLastError() != cudaSuccess);

  OK(cudaFree(a));
  OK(cudaFree(b));
  size_t freeAfter = 0;
  OK(cudaMemGetInfo(&freeAfter, &total));
  CHECK(freeAfter == freeBefore);
  int version = 0;
  OK(cudaRuntimeGetVersion(&version));
  CHECK(version >= 13000);
  std::printf("memory_path: all checks passed\n");
  return 0;
}
