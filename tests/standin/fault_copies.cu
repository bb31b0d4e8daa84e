// The application of tests/integration/faults_test.cpp: copies a large pageable buffer to the device
// and back in a loop, so that a fault (the application, its worker or its node killed, the TCP
// connection cut) lands in the middle of a copy. Prints one line per call, flushed:
//   copy <i> <cudaError name> <milliseconds>
// and after the first failed call three more calls, each timed, to show that later calls fail fast:
//   after <call> <cudaError name> <milliseconds>
// then "fault_copies: done" and exit 0. Exit 2 if nothing failed within FLYT_TEST_COPY_SECONDS
// (default 60). The copy size is argv[1] in MiB (default 64).
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double millisSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

template <typename Call>
cudaError_t timed(const char* prefix, const char* what, Call call) {
  const auto start = Clock::now();
  const cudaError_t error = call();
  std::printf("%s %s %s %.1f\n", prefix, what, cudaGetErrorName(error), millisSince(start));
  std::fflush(stdout);
  return error;
}

}  // namespace

int main(int argc, char** argv) {
  const size_t mib = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 64;
  const char* limit = std::getenv("FLYT_TEST_COPY_SECONDS");
  const double seconds = limit != nullptr ? std::atof(limit) : 60.0;
  const size_t bytes = mib << 20;
  std::vector<unsigned char> host(bytes, 0x5a);
  void* device = nullptr;
  if (cudaMalloc(&device, bytes) != cudaSuccess) {
    std::printf("fault_copies: cudaMalloc of %zu MiB failed\n", mib);
    return 1;
  }
  const auto start = Clock::now();
  for (int i = 0; millisSince(start) < seconds * 1000; ++i) {
    char index[32];
    std::snprintf(index, sizeof index, "%d", i);
    const auto kind = i % 2 == 0 ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost;
    const cudaError_t error = timed("copy", index, [&] {
      return kind == cudaMemcpyHostToDevice ? cudaMemcpy(device, host.data(), bytes, kind)
                                            : cudaMemcpy(host.data(), device, bytes, kind);
    });
    if (error == cudaSuccess) continue;
    timed("after", "cudaMemcpy", [&] { return cudaMemcpy(device, host.data(), bytes, cudaMemcpyHostToDevice); });
    void* more = nullptr;
    timed("after", "cudaMalloc", [&] { return cudaMalloc(&more, 1 << 20); });
    timed("after", "cudaDeviceSynchronize", [] { return cudaDeviceSynchronize(); });
    std::printf("fault_copies: done\n");
    std::fflush(stdout);  // before exit: a hang in the runtime's teardown must not hide this line
    return 0;
  }
  std::printf("fault_copies: no call failed within %.0f s\n", seconds);
  return 2;
}
