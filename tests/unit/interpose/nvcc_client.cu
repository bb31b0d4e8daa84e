// A CUDA application as nvcc builds it (-cudart shared), run by library_test.cpp.
// Prints, on stdout, one line per finding so that the test can assert on each:
//   libcudart <path>      every libcudart.so file mapped into this process (/proc/self/maps)
//   graph <rc> <rc>       two calls of cudaGraphCreate, a function Flyt does not support
//   launch <rc>           cudaGetLastError after a <<<>>> launch of the kernel below
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <set>
#include <string>

__global__ void scale(float* data, float factor, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) data[i] *= factor;
}

int main() {
  std::set<std::string> runtimes;
  if (FILE* maps = std::fopen("/proc/self/maps", "r")) {
    char line[4096];
    while (std::fgets(line, sizeof line, maps) != nullptr) {
      const char* path = std::strchr(line, '/');
      if (path != nullptr && std::strstr(path, "libcudart.so") != nullptr) {
        runtimes.emplace(path, std::strcspn(path, "\n"));
      }
    }
    std::fclose(maps);
  }
  for (const auto& path : runtimes) std::printf("libcudart %s\n", path.c_str());

  cudaGraph_t graph = nullptr;
  const cudaError_t first = cudaGraphCreate(&graph, 0);
  const cudaError_t second = cudaGraphCreate(&graph, 0);
  std::printf("graph %d %d\n", static_cast<int>(first), static_cast<int>(second));

  scale<<<1, 32>>>(nullptr, 2.0f, 0);
  std::printf("launch %d\n", static_cast<int>(cudaGetLastError()));
  return 0;
}
