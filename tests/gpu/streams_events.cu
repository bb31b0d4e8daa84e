// Eight streams, each copying its own chunk from pinned memory to the device, transforming it and
// copying it back, all asynchronously, bracketed by events. A last stream waits on every stream's
// stop event. Checks the data, that every per-stream and the overall elapsed time is positive, and
// that events and streams report completion after the synchronisation.
#include "gpu_check.cuh"

__global__ void affine(float* data, int n, float scale, float offset) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) data[i] = data[i] * scale + offset;
}

int main() {
  require_cuda_device();
  constexpr int kStreams = 8;
  constexpr int kChunk = 1 << 18;  // floats per stream
  constexpr size_t kChunkBytes = kChunk * sizeof(float);

  float* host_in = nullptr;
  float* host_out = nullptr;
  float* device = nullptr;
  CHECK_CUDA(cudaMallocHost(&host_in, kStreams * kChunkBytes));
  CHECK_CUDA(cudaMallocHost(&host_out, kStreams * kChunkBytes));
  CHECK_CUDA(cudaMalloc(&device, kStreams * kChunkBytes));
  for (int i = 0; i < kStreams * kChunk; ++i) {
    host_in[i] = static_cast<float>(i % 1000);
    host_out[i] = -1.0f;
  }

  cudaStream_t streams[kStreams];
  cudaEvent_t start[kStreams], stop[kStreams];
  cudaStream_t joiner;
  cudaEvent_t all_start, all_stop;
  CHECK_CUDA(cudaStreamCreateWithFlags(&joiner, cudaStreamNonBlocking));
  CHECK_CUDA(cudaEventCreate(&all_start));
  CHECK_CUDA(cudaEventCreate(&all_stop));
  for (int s = 0; s < kStreams; ++s) {
    CHECK_CUDA(cudaStreamCreateWithFlags(&streams[s], cudaStreamNonBlocking));
    CHECK_CUDA(cudaEventCreate(&start[s]));
    CHECK_CUDA(cudaEventCreate(&stop[s]));
  }

  CHECK_CUDA(cudaEventRecord(all_start, joiner));
  CHECK_CUDA(cudaStreamSynchronize(joiner));
  for (int s = 0; s < kStreams; ++s) {
    float* d = device + s * kChunk;
    CHECK_CUDA(cudaEventRecord(start[s], streams[s]));
    CHECK_CUDA(cudaMemcpyAsync(d, host_in + s * kChunk, kChunkBytes, cudaMemcpyHostToDevice,
                               streams[s]));
    affine<<<(kChunk + 255) / 256, 256, 0, streams[s]>>>(d, kChunk, 2.0f, static_cast<float>(s));
    CHECK_CUDA(cudaGetLastError());
    CHECK_CUDA(cudaMemcpyAsync(host_out + s * kChunk, d, kChunkBytes, cudaMemcpyDeviceToHost,
                               streams[s]));
    CHECK_CUDA(cudaEventRecord(stop[s], streams[s]));
    CHECK_CUDA(cudaStreamWaitEvent(joiner, stop[s], 0));
  }
  CHECK_CUDA(cudaEventRecord(all_stop, joiner));
  CHECK_CUDA(cudaEventSynchronize(all_stop));

  for (int s = 0; s < kStreams; ++s) {
    if (cudaEventQuery(stop[s]) != cudaSuccess)
      return fail("streams_events", "stream %d's stop event is not complete after the join", s);
    if (cudaStreamQuery(streams[s]) != cudaSuccess)
      return fail("streams_events", "stream %d is not idle after the join", s);
    float ms = -1.0f;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start[s], stop[s]));
    if (!(ms > 0.0f)) return fail("streams_events", "stream %d: elapsed time %f ms", s, ms);
  }
  float total_ms = -1.0f;
  CHECK_CUDA(cudaEventElapsedTime(&total_ms, all_start, all_stop));
  if (!(total_ms > 0.0f)) return fail("streams_events", "overall elapsed time %f ms", total_ms);

  for (int i = 0; i < kStreams * kChunk; ++i) {
    const float expected = host_in[i] * 2.0f + static_cast<float>(i / kChunk);
    if (host_out[i] != expected)
      return fail("streams_events", "out[%d] = %f, expected %f", i, host_out[i], expected);
  }

  for (int s = 0; s < kStreams; ++s) {
    CHECK_CUDA(cudaEventDestroy(start[s]));
    CHECK_CUDA(cudaEventDestroy(stop[s]));
    CHECK_CUDA(cudaStreamDestroy(streams[s]));
  }
  CHECK_CUDA(cudaEventDestroy(all_start));
  CHECK_CUDA(cudaEventDestroy(all_stop));
  CHECK_CUDA(cudaStreamDestroy(joiner));
  CHECK_CUDA(cudaFree(device));
  CHECK_CUDA(cudaFreeHost(host_in));
  CHECK_CUDA(cudaFreeHost(host_out));
  std::printf("overall %.3f ms\n", total_ms);
  return pass("streams_events");
}
