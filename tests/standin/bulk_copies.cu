// Large copies through every host-memory path of the fast path (interpose/src/memcpy.cpp):
// pageable memory staged through the slot ring (sizes below one slot, across several slots, and
// more than the whole ring, so slots are reused), synchronous and on a stream; pinned memory
// (cudaMallocHost / cudaHostAlloc) at offsets inside its allocation, including one allocation larger
// than a region chunk; freed pinned memory handed out again; and refused copies in the middle of a
// pipeline, after which the session goes on. Under `flyt run` on shared memory the program also
// checks that its pinned memory really lies in the data region (a /dev/shm/flyt-region-* mapping).
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "standin_check.h"

namespace {

unsigned char pattern(size_t i, int seed) { return static_cast<unsigned char>((i * 131 + seed * 7 + (i >> 12)) & 0xff); }

int fill(unsigned char* p, size_t n, int seed) {
  for (size_t i = 0; i < n; ++i) p[i] = pattern(i, seed);
  return 0;
}

int verify(const unsigned char* p, size_t n, int seed, const char* what) {
  for (size_t i = 0; i < n; ++i) {
    if (p[i] != pattern(i, seed)) {
      std::fprintf(stderr, "FAIL %s: byte %zu of %zu is %d, expected %d\n", what, i, n, p[i], pattern(i, seed));
      return 1;
    }
  }
  return 0;
}

// True when `p` lies in a mapping of a Flyt data-region segment.
bool inDataRegion(const void* p) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  const auto address = reinterpret_cast<std::uintptr_t>(p);
  while (std::getline(maps, line)) {
    std::uintptr_t low = 0, high = 0;
    char dash = 0;
    std::istringstream fields(line);
    fields >> std::hex >> low >> dash >> high;
    if (address >= low && address < high) return line.find("/flyt-region-") != std::string::npos;
  }
  return false;
}

int pageable(size_t n, cudaStream_t stream, int seed) {
  std::vector<unsigned char> up(n), down(n, 0);
  fill(up.data(), n, seed);
  unsigned char* device = nullptr;
  OK(cudaMalloc(&device, n));
  if (stream == nullptr) {
    OK(cudaMemcpy(device, up.data(), n, cudaMemcpyHostToDevice));
    OK(cudaMemcpy(down.data(), device, n, cudaMemcpyDeviceToHost));
  } else {
    OK(cudaMemcpyAsync(device, up.data(), n, cudaMemcpyHostToDevice, stream));
    OK(cudaMemcpyAsync(down.data(), device, n, cudaMemcpyDeviceToHost, stream));
    OK(cudaStreamSynchronize(stream));
  }
  OK(cudaFree(device));
  return verify(down.data(), n, seed, stream == nullptr ? "pageable round trip" : "pageable round trip on a stream");
}

int pinned(size_t n, cudaStream_t stream, bool expectRegion, int seed) {
  const size_t skew = 4096 + 3;  // copies start inside the allocation, not at its base
  unsigned char *up = nullptr, *down = nullptr, *device = nullptr;
  OK(cudaMallocHost(reinterpret_cast<void**>(&up), n + skew));
  OK(cudaHostAlloc(reinterpret_cast<void**>(&down), n + skew, cudaHostAllocDefault));
  if (expectRegion && (!inDataRegion(up) || !inDataRegion(down + n + skew - 1))) {
    std::fprintf(stderr, "FAIL pinned memory of %zu bytes is not in the data region\n", n + skew);
    return 1;
  }
  fill(up + skew, n, seed);
  std::memset(down, 0, n + skew);
  OK(cudaMalloc(&device, n));
  if (stream == nullptr) {
    OK(cudaMemcpy(device, up + skew, n, cudaMemcpyHostToDevice));
    OK(cudaMemcpy(down + skew, device, n, cudaMemcpyDeviceToHost));
  } else {
    OK(cudaMemcpyAsync(device, up + skew, n, cudaMemcpyHostToDevice, stream));
    OK(cudaMemcpyAsync(down + skew, device, n, cudaMemcpyDeviceToHost, stream));
    OK(cudaStreamSynchronize(stream));
  }
  if (verify(down + skew, n, seed, "pinned round trip") != 0) return 1;
  for (size_t i = 0; i < skew; ++i) CHECK(down[i] == 0);  // nothing written before the range
  OK(cudaFree(device));
  OK(cudaFreeHost(up));
  OK(cudaFreeHost(down));
  return 0;
}

// A copy refused in the middle of the ring: the pipeline drains, reports the error, and the next
// copy works.
int refusedThenFine(cudaStream_t stream) {
  const size_t n = 20u << 20;
  std::vector<unsigned char> host(n, 1);
  unsigned char* device = nullptr;
  OK(cudaMalloc(&device, n / 2));
  CHECK(cudaMemcpy(device, host.data(), n, cudaMemcpyHostToDevice) != cudaSuccess);
  CHECK(cudaGetLastError() != cudaSuccess);
  CHECK(cudaMemcpy(host.data(), device, n, cudaMemcpyDeviceToHost) != cudaSuccess);
  (void)cudaGetLastError();
  CHECK(cudaMemcpyAsync(host.data(), device, n, cudaMemcpyDeviceToHost, stream) != cudaSuccess);
  (void)cudaGetLastError();
  OK(cudaFree(device));
  return pageable(3u << 20, nullptr, 9);
}

}  // namespace

int main() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("bulk_copies: no CUDA device\n");
    return 77;
  }
  const char* server = std::getenv("FLYT_SERVER");
  const bool expectRegion = server != nullptr && std::strncmp(server, "shm://", 6) == 0;
  cudaStream_t stream = nullptr;
  OK(cudaStreamCreate(&stream));
  const size_t sizes[] = {300u << 10, (20u << 20) + 5, (70u << 20) + 7};
  int seed = 1;
  for (size_t n : sizes) {
    if (pageable(n, nullptr, seed++) != 0) return 1;
    if (pageable(n, stream, seed++) != 0) return 1;
    if (pinned(n, nullptr, expectRegion, seed++) != 0) return 1;
    if (pinned(n, stream, expectRegion, seed++) != 0) return 1;
  }
  if (refusedThenFine(stream) != 0) return 1;
  OK(cudaStreamDestroy(stream));
  std::printf("bulk_copies: all checks passed%s\n", expectRegion ? " (pinned memory in the data region)" : "");
  return 0;
}
