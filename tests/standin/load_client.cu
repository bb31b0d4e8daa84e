// One client of the load test (run_load.sh): argv[1] (default 1000) mixed CUDA calls in rounds of
// 16: cudaMalloc (4 KiB .. 64 KiB), cudaMemcpy both ways with the data checked, cudaMemset checked,
// a stream and an event (create, cudaMemsetAsync, record, synchronize, query, destroy), cudaFree and
// cudaGetLastError. Every call that does not return cudaSuccess, and every byte that comes back
// wrong, counts as an error (the first few are described on stderr). Prints
//   load_client: <calls> calls, <errors> errors
// and exits 0 when there were no errors, 1 otherwise.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

long calls = 0;
long errors = 0;

void count(cudaError_t error, const char* what, long round) {
  ++calls;
  if (error == cudaSuccess) return;
  if (++errors <= 5) std::fprintf(stderr, "load_client: round %ld: %s: %s\n", round, what, cudaGetErrorName(error));
}

void check(bool good, const char* what, long round) {
  if (good) return;
  if (++errors <= 5) std::fprintf(stderr, "load_client: round %ld: %s: wrong data\n", round, what);
}

unsigned char pattern(size_t i, long round) { return static_cast<unsigned char>((i * 31 + round * 7 + (i >> 9)) & 0xff); }

void runRound(long r) {
  const size_t size = size_t(4096) << (r % 5);
  std::vector<unsigned char> up(size), down(size, 0);
  for (size_t i = 0; i < size; ++i) up[i] = pattern(i, r);
  unsigned char* device = nullptr;
  count(cudaMalloc(reinterpret_cast<void**>(&device), size), "cudaMalloc", r);
  count(cudaMemcpy(device, up.data(), size, cudaMemcpyHostToDevice), "cudaMemcpy HtoD", r);
  count(cudaMemcpy(down.data(), device, size, cudaMemcpyDeviceToHost), "cudaMemcpy DtoH", r);
  check(down == up, "round trip", r);
  const int value = static_cast<int>(r & 0xff);
  count(cudaMemset(device, value, size), "cudaMemset", r);
  count(cudaMemcpy(down.data(), device, size, cudaMemcpyDeviceToHost), "cudaMemcpy DtoH after memset", r);
  bool filled = true;
  for (unsigned char byte : down) filled = filled && byte == value;
  check(filled, "memset", r);
  cudaStream_t stream = nullptr;
  cudaEvent_t event = nullptr;
  count(cudaStreamCreate(&stream), "cudaStreamCreate", r);
  count(cudaEventCreate(&event), "cudaEventCreate", r);
  count(cudaMemsetAsync(device, 0, size, stream), "cudaMemsetAsync", r);
  count(cudaEventRecord(event, stream), "cudaEventRecord", r);
  count(cudaStreamSynchronize(stream), "cudaStreamSynchronize", r);
  count(cudaEventQuery(event), "cudaEventQuery", r);
  count(cudaEventDestroy(event), "cudaEventDestroy", r);
  count(cudaStreamDestroy(stream), "cudaStreamDestroy", r);
  count(cudaFree(device), "cudaFree", r);
  count(cudaGetLastError(), "cudaGetLastError", r);
  count(cudaDeviceSynchronize(), "cudaDeviceSynchronize", r);
}

}  // namespace

int main(int argc, char** argv) {
  const long wanted = argc > 1 ? std::atol(argv[1]) : 1000;
  for (long r = 0; calls < wanted; ++r) runRound(r);
  std::printf("load_client: %ld calls, %ld errors\n", calls, errors);
  return errors == 0 ? 0 : 1;
}
