// Host functions run in stream order. Eight steps are queued on one stream: a kernel that takes a
// little while and writes a value, a copy of that value into pinned memory, then a host function
// (even steps: cudaLaunchHostFunc, odd steps: cudaStreamAddCallback) that appends the step and the
// value it sees to a host-side log. The log must list the steps in order, each with the value its
// kernel wrote (a host function that ran before its kernel and copy would see the sentinel), and
// every callback must report cudaSuccess.
#include "gpu_check.cuh"

#include <mutex>
#include <vector>

constexpr int kSteps = 8;
constexpr int kSentinel = -1;

struct Entry {
  int step;
  int seen;
  cudaError_t status;
};

struct Log {
  std::mutex mutex;
  std::vector<Entry> entries;
  int* pinned = nullptr;  // pinned[step] receives the value kernel `step` wrote
};

struct StepContext {
  Log* log;
  int step;
};

__global__ void slow_write(int* out, int step) {
  const long long start = clock64();
  while (clock64() - start < 200000) {  // ~0.1 ms, so a host function that runs early would win
  }
  out[step] = step * 10 + 7;
}

void record(StepContext* context, cudaError_t status) {
  std::lock_guard<std::mutex> lock(context->log->mutex);
  context->log->entries.push_back(
      {context->step, context->log->pinned[context->step], status});
}

void CUDART_CB host_func(void* data) { record(static_cast<StepContext*>(data), cudaSuccess); }

void CUDART_CB stream_callback(cudaStream_t, cudaError_t status, void* data) {
  record(static_cast<StepContext*>(data), status);
}

int main() {
  require_cuda_device();
  Log log;
  CHECK_CUDA(cudaMallocHost(&log.pinned, kSteps * sizeof(int)));
  for (int i = 0; i < kSteps; ++i) log.pinned[i] = kSentinel;
  int* device = nullptr;
  CHECK_CUDA(cudaMalloc(&device, kSteps * sizeof(int)));
  CHECK_CUDA(cudaMemset(device, 0, kSteps * sizeof(int)));

  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  StepContext contexts[kSteps];
  for (int step = 0; step < kSteps; ++step) {
    contexts[step] = {&log, step};
    slow_write<<<1, 1, 0, stream>>>(device, step);
    CHECK_CUDA(cudaGetLastError());
    CHECK_CUDA(cudaMemcpyAsync(log.pinned + step, device + step, sizeof(int),
                               cudaMemcpyDeviceToHost, stream));
    if (step % 2 == 0)
      CHECK_CUDA(cudaLaunchHostFunc(stream, host_func, &contexts[step]));
    else
      CHECK_CUDA(cudaStreamAddCallback(stream, stream_callback, &contexts[step], 0));
  }
  CHECK_CUDA(cudaStreamSynchronize(stream));

  std::lock_guard<std::mutex> lock(log.mutex);
  if (log.entries.size() != kSteps)
    return fail("stream_callback", "%zu host functions ran, expected %d", log.entries.size(),
                kSteps);
  for (int i = 0; i < kSteps; ++i) {
    const Entry& entry = log.entries[i];
    std::printf("log %d: step %d saw %d\n", i, entry.step, entry.seen);
    if (entry.step != i)
      return fail("stream_callback", "log entry %d is step %d: host functions ran out of order", i,
                  entry.step);
    if (entry.seen != i * 10 + 7)
      return fail("stream_callback",
                  "step %d's host function saw %d, expected %d: it ran before its kernel and copy",
                  i, entry.seen, i * 10 + 7);
    if (entry.status != cudaSuccess)
      return fail("stream_callback", "step %d's callback got status %s", i,
                  cudaGetErrorName(entry.status));
  }
  CHECK_CUDA(cudaStreamDestroy(stream));
  CHECK_CUDA(cudaFree(device));
  CHECK_CUDA(cudaFreeHost(log.pinned));
  return pass("stream_callback");
}
