// Several host threads share the device, each with its own non-blocking stream, device buffer and
// pinned host buffer, and each runs rounds of copy in, kernel, copy out, synchronise, check.
#include "gpu_check.cuh"

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

constexpr int kThreads = 4;
constexpr int kRounds = 10;
constexpr int kElements = 1 << 16;

__global__ void add(int* data, int n, int amount) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) data[i] += amount;
}

// Returns an empty string on success, else what went wrong.
std::string worker(int id) {
  auto failed = [id](const char* what, cudaError_t error) {
    return "thread " + std::to_string(id) + ": " + what + " returned " + cudaGetErrorName(error);
  };
  cudaError_t error = cudaSetDevice(0);
  if (error != cudaSuccess) return failed("cudaSetDevice", error);
  cudaStream_t stream;
  if ((error = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)) != cudaSuccess)
    return failed("cudaStreamCreateWithFlags", error);
  int* device = nullptr;
  int* host = nullptr;
  if ((error = cudaMalloc(&device, kElements * sizeof(int))) != cudaSuccess)
    return failed("cudaMalloc", error);
  if ((error = cudaMallocHost(&host, kElements * sizeof(int))) != cudaSuccess)
    return failed("cudaMallocHost", error);

  for (int round = 0; round < kRounds; ++round) {
    for (int i = 0; i < kElements; ++i) host[i] = i * kThreads + id;
    const int amount = id * 1000 + round;
    cudaMemcpyAsync(device, host, kElements * sizeof(int), cudaMemcpyHostToDevice, stream);
    add<<<(kElements + 255) / 256, 256, 0, stream>>>(device, kElements, amount);
    add<<<(kElements + 255) / 256, 256, 0, stream>>>(device, kElements, amount);
    cudaMemcpyAsync(host, device, kElements * sizeof(int), cudaMemcpyDeviceToHost, stream);
    if ((error = cudaStreamSynchronize(stream)) != cudaSuccess)
      return failed("cudaStreamSynchronize", error);
    if ((error = cudaGetLastError()) != cudaSuccess) return failed("a launch or copy", error);
    for (int i = 0; i < kElements; ++i) {
      const int expected = i * kThreads + id + 2 * amount;
      if (host[i] != expected)
        return "thread " + std::to_string(id) + " round " + std::to_string(round) + ": element " +
               std::to_string(i) + " = " + std::to_string(host[i]) + ", expected " +
               std::to_string(expected);
    }
  }
  if ((error = cudaFreeHost(host)) != cudaSuccess) return failed("cudaFreeHost", error);
  if ((error = cudaFree(device)) != cudaSuccess) return failed("cudaFree", error);
  if ((error = cudaStreamDestroy(stream)) != cudaSuccess) return failed("cudaStreamDestroy", error);
  return "";
}

int main() {
  require_cuda_device();
  std::vector<std::string> results(kThreads);
  std::vector<std::thread> threads;
  for (int id = 0; id < kThreads; ++id)
    threads.emplace_back([id, &results] { results[id] = worker(id); });
  for (auto& thread : threads) thread.join();
  int failures = 0;
  for (const auto& result : results)
    if (!result.empty()) {
      std::fprintf(stderr, "FAIL multithreaded_streams: %s\n", result.c_str());
      ++failures;
    }
  if (failures > 0) return kExitFailed;
  return pass("multithreaded_streams");
}
