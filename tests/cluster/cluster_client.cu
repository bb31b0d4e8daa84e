// A CUDA application for the cluster tests (tests/cluster/cluster_test.cpp), run through
// `flyt run --orchestrator ...`: it opens its session, prints what the session reports, and holds
// the session until its stdin closes (or allocates on request), so the test can look at the
// orchestrator and the nodes meanwhile.
//
// stdout protocol, one line each:
//   "ready pid=<pid> total=<bytes> free=<bytes> sms=<n> name=<device name>"   after the first call
//   for each stdin line "alloc <bytes>": "alloc <bytes> <cudaError name>" (the memory is kept)
//   for each stdin line "info":          "info total=<bytes> free=<bytes>"
//   "bye <cudaError name of cudaDeviceSynchronize>" when stdin closes
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

int main() {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::size_t freeBytes = 0, total = 0;
  const cudaError_t info = cudaMemGetInfo(&freeBytes, &total);
  if (info != cudaSuccess) {
    std::printf("failed %s\n", cudaGetErrorName(info));
    return 1;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    std::printf("failed cudaGetDeviceProperties\n");
    return 1;
  }
  std::printf("ready pid=%d total=%zu free=%zu sms=%d name=%s\n", static_cast<int>(::getpid()), total, freeBytes,
              prop.multiProcessorCount, prop.name);
  std::vector<void*> kept;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.rfind("alloc ", 0) == 0) {
      const std::size_t bytes = std::stoull(line.substr(6));
      void* pointer = nullptr;
      const cudaError_t error = cudaMalloc(&pointer, bytes);
      if (error == cudaSuccess) kept.push_back(pointer);
      std::printf("alloc %zu %s\n", bytes, cudaGetErrorName(error));
    } else if (line == "info") {
      const cudaError_t error = cudaMemGetInfo(&freeBytes, &total);
      std::printf("info total=%zu free=%zu %s\n", total, freeBytes, cudaGetErrorName(error));
    }
  }
  for (void* pointer : kept) cudaFree(pointer);
  std::printf("bye %s\n", cudaGetErrorName(cudaDeviceSynchronize()));
  return 0;
}
