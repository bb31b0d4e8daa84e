// Exercises pinned host memory, copies on streams, pitched copies and host functions through whatever
// libcudart.so.13 the program loads. Run under `flyt run` it goes through Flyt's client, a transport
// and a worker; in CI the worker's executor is the GPU stand-in (a test double), on a GPU host the
// real GPU. Exit 0 when every check holds, 1 with a FAIL line otherwise.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "standin_check.h"

namespace {

unsigned char pattern(size_t i, int seed) { return static_cast<unsigned char>(i * 31 + seed * 7 + (i >> 11)); }

int pinnedMemory() {
  void* plain = nullptr;
  OK(cudaMallocHost(&plain, 1000));
  CHECK(plain != nullptr && reinterpret_cast<std::uintptr_t>(plain) % 4096 == 0);
  std::memset(plain, 0x11, 1000);
  unsigned int flags = 99;
  OK(cudaHostGetFlags(&flags, plain));
  CHECK(flags == cudaHostAllocDefault);

  const unsigned kinds[] = {cudaHostAllocPortable, cudaHostAllocMapped, cudaHostAllocWriteCombined,
                            cudaHostAllocPortable | cudaHostAllocWriteCombined};
  for (unsigned kind : kinds) {
    char* memory = nullptr;
    OK(cudaHostAlloc(reinterpret_cast<void**>(&memory), 5000, kind));
    OK(cudaHostGetFlags(&flags, memory + 4999));  // any address inside the allocation
    CHECK((flags & kind) == kind);
    OK(cudaFreeHost(memory));
  }
  CHECK(cudaHostAlloc(&plain, 16, 0x80) == cudaErrorInvalidValue);  // unknown flag
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);

  // Freeing what was not allocated (or twice) is an error, and the thread's last error.
  std::vector<char> pageable(8192);
  CHECK(cudaFreeHost(pageable.data()) == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(cudaHostGetFlags(&flags, pageable.data()) == cudaErrorInvalidValue);
  OK(cudaFreeHost(plain));
  CHECK(cudaFreeHost(plain) == cudaErrorInvalidValue);
  OK(cudaFreeHost(nullptr));

  // Registered ranges: recorded, never twice, unregistered once.
  OK(cudaHostRegister(pageable.data(), pageable.size(), cudaHostRegisterPortable));
  CHECK(cudaHostRegister(pageable.data() + 100, 100, 0) == cudaErrorHostMemoryAlreadyRegistered);
  void* device = nullptr;
  CHECK(cudaHostGetDevicePointer(&device, pageable.data(), 0) == cudaErrorNotSupported);
  OK(cudaHostUnregister(pageable.data()));
  CHECK(cudaHostUnregister(pageable.data()) == cudaErrorHostMemoryNotRegistered);
  (void)cudaGetLastError();
  return 0;
}

// Host-to-device, a memset and device-to-device on one stream, then device-to-host into pinned
// memory; 3 MiB, so every host copy is split into several calls.
int asyncCopies(cudaStream_t stream) {
  const size_t n = 3 * 1024 * 1024 + 5;
  unsigned char* source = nullptr;
  unsigned char* back = nullptr;
  OK(cudaMallocHost(reinterpret_cast<void**>(&source), n));
  OK(cudaHostAlloc(reinterpret_cast<void**>(&back), n, cudaHostAllocPortable));
  for (size_t i = 0; i < n; ++i) source[i] = pattern(i, 1);
  std::memset(back, 0, n);
  unsigned char *a = nullptr, *b = nullptr;
  OK(cudaMalloc(&a, n));
  OK(cudaMalloc(&b, n));
  OK(cudaMemcpyAsync(a, source, n, cudaMemcpyHostToDevice, stream));
  OK(cudaMemsetAsync(a + 1000, 0x42, 300, stream));
  OK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, stream));
  OK(cudaMemcpyAsync(back, b, n, cudaMemcpyDeviceToHost, stream));
  OK(cudaStreamSynchronize(stream));
  std::memset(source, 0xee, n);  // pinned memory: the copy read it before the stream finished
  for (size_t i = 0; i < n; ++i) {
    const unsigned char want = (i >= 1000 && i < 1300) ? 0x42 : pattern(i, 1);
    if (back[i] != want) {
      std::fprintf(stderr, "FAIL async byte %zu: %d != %d\n", i, back[i], want);
      return 1;
    }
  }
  // Refused: a range outside every allocation, and a stream that is not the session's. A copy from
  // or to pinned memory is asynchronous through Flyt too: its error may come from the next
  // synchronising call, as CUDA allows for errors of asynchronous work.
  CHECK(cudaMemcpyAsync(back, a + n - 8, 16, cudaMemcpyDeviceToHost, stream) != cudaSuccess ||
        cudaStreamSynchronize(stream) != cudaSuccess);
  (void)cudaGetLastError();
  CHECK(cudaMemcpyAsync(back, a, 16, cudaMemcpyDeviceToHost, reinterpret_cast<cudaStream_t>(0x1234)) !=
            cudaSuccess ||
        cudaStreamSynchronize(stream) != cudaSuccess);
  CHECK(cudaMemcpyAsync(back, a, 16, cudaMemcpyDefault, stream) == cudaErrorNotSupported);
  (void)cudaGetLastError();
  OK(cudaFree(a));
  OK(cudaFree(b));
  OK(cudaFreeHost(source));
  OK(cudaFreeHost(back));
  return 0;
}

// Rows of `width` bytes in a host matrix `hostPitch` apart, through a pitched device allocation and
// back into a matrix of another pitch, with cudaMemcpy2D or cudaMemcpy2DAsync.
int pitchedRoundTrip(size_t width, size_t height, cudaStream_t stream, bool async, int seed) {
  const size_t hostPitch = width + 13, backPitch = width + 7;
  std::vector<unsigned char> host(hostPitch * height), back(backPitch * height, 0xcd);
  for (size_t i = 0; i < host.size(); ++i) host[i] = pattern(i, seed);
  void* device = nullptr;
  void* copy = nullptr;
  size_t pitch = 0, copyPitch = 0;
  OK(cudaMallocPitch(&device, &pitch, width, height));
  OK(cudaMallocPitch(&copy, &copyPitch, width, height));
  CHECK(pitch >= width);
  if (async) {
    OK(cudaMemcpy2DAsync(device, pitch, host.data(), hostPitch, width, height, cudaMemcpyHostToDevice, stream));
    OK(cudaMemcpy2DAsync(copy, copyPitch, device, pitch, width, height, cudaMemcpyDeviceToDevice, stream));
    OK(cudaMemcpy2DAsync(back.data(), backPitch, copy, copyPitch, width, height, cudaMemcpyDeviceToHost, stream));
    OK(cudaStreamSynchronize(stream));
  } else {
    OK(cudaMemcpy2D(device, pitch, host.data(), hostPitch, width, height, cudaMemcpyHostToDevice));
    OK(cudaMemcpy2D(copy, copyPitch, device, pitch, width, height, cudaMemcpyDeviceToDevice));
    OK(cudaMemcpy2D(back.data(), backPitch, copy, copyPitch, width, height, cudaMemcpyDeviceToHost));
  }
  for (size_t row = 0; row < height; ++row) {
    CHECK(std::memcmp(&back[row * backPitch], &host[row * hostPitch], width) == 0);
    for (size_t column = width; column < backPitch && row * backPitch + column < back.size(); ++column) {
      CHECK(back[row * backPitch + column] == 0xcd);  // the gaps between rows are untouched
    }
  }
  OK(cudaFree(device));
  OK(cudaFree(copy));
  return 0;
}

int pitchedCopies(cudaStream_t stream) {
  if (pitchedRoundTrip(100, 37, stream, false, 2) != 0) return 1;
  if (pitchedRoundTrip(100, 37, stream, true, 3) != 0) return 1;
  if (pitchedRoundTrip(3000, 1000, stream, false, 4) != 0) return 1;      // split into row blocks
  if (pitchedRoundTrip(3000, 1000, stream, true, 5) != 0) return 1;
  if (pitchedRoundTrip(2500000, 3, stream, false, 6) != 0) return 1;      // rows split into pieces
  if (pitchedRoundTrip(2500000, 3, stream, true, 7) != 0) return 1;

  // A 2D memset, then the matrix back with a 2D copy.
  const size_t width = 64, height = 20;
  void* device = nullptr;
  size_t pitch = 0;
  OK(cudaMallocPitch(&device, &pitch, width, height));
  OK(cudaMemset2D(device, pitch, 0, width, height));
  OK(cudaMemset2D(device, pitch, 0x5a, width / 2, height));
  std::vector<unsigned char> back(width * height, 0xff);
  OK(cudaMemcpy2D(back.data(), width, device, pitch, width, height, cudaMemcpyDeviceToHost));
  for (size_t row = 0; row < height; ++row) {
    for (size_t column = 0; column < width; ++column) {
      CHECK(back[row * width + column] == (column < width / 2 ? 0x5a : 0));
    }
  }
  // Refused: a pitch narrower than the rows, rows past the allocation.
  CHECK(cudaMemcpy2D(back.data(), width - 1, device, pitch, width, 2, cudaMemcpyDeviceToHost) ==
        cudaErrorInvalidPitchValue);
  CHECK(cudaMemcpy2D(back.data(), width, device, pitch, width, height + 1, cudaMemcpyDeviceToHost) != cudaSuccess);
  (void)cudaGetLastError();
  OK(cudaFree(device));
  return 0;
}

struct HostLog {
  std::vector<int> steps;
  std::vector<int> seen;
  std::vector<cudaError_t> statuses;
  unsigned char* pinned = nullptr;
};
struct StepContext {
  HostLog* log;
  int step;
};

void CUDART_CB hostFunc(void* data) {
  auto* context = static_cast<StepContext*>(data);
  context->log->steps.push_back(context->step);
  context->log->seen.push_back(context->log->pinned[context->step]);
  context->log->statuses.push_back(cudaSuccess);
}

void CUDART_CB streamCallback(cudaStream_t, cudaError_t status, void* data) {
  auto* context = static_cast<StepContext*>(data);
  context->log->steps.push_back(context->step);
  context->log->seen.push_back(context->log->pinned[context->step]);
  context->log->statuses.push_back(status);
}

// Each step: a memset and a copy into pinned memory on the stream, then a host function that logs
// what it sees; a host function that ran before its copy would see the sentinel.
int hostFunctions(cudaStream_t stream) {
  constexpr int kSteps = 6;
  HostLog log;
  OK(cudaMallocHost(reinterpret_cast<void**>(&log.pinned), kSteps));
  std::memset(log.pinned, 0xff, kSteps);
  unsigned char* device = nullptr;
  OK(cudaMalloc(&device, kSteps));
  StepContext contexts[kSteps];
  for (int step = 0; step < kSteps; ++step) {
    contexts[step] = {&log, step};
    OK(cudaMemsetAsync(device + step, step * 10 + 7, 1, stream));
    OK(cudaMemcpyAsync(log.pinned + step, device + step, 1, cudaMemcpyDeviceToHost, stream));
    if (step % 2 == 0) {
      OK(cudaLaunchHostFunc(stream, hostFunc, &contexts[step]));
    } else {
      OK(cudaStreamAddCallback(stream, streamCallback, &contexts[step], 0));
    }
  }
  OK(cudaStreamSynchronize(stream));
  CHECK(log.steps.size() == kSteps);
  for (int step = 0; step < kSteps; ++step) {
    CHECK(log.steps[step] == step);
    CHECK(log.seen[step] == step * 10 + 7);
    CHECK(log.statuses[step] == cudaSuccess);
  }
  CHECK(cudaStreamAddCallback(stream, streamCallback, &contexts[0], 1) == cudaErrorInvalidValue);
  CHECK(cudaLaunchHostFunc(stream, nullptr, nullptr) == cudaErrorInvalidValue);
  (void)cudaGetLastError();
  OK(cudaFree(device));
  OK(cudaFreeHost(log.pinned));
  return 0;
}

}  // namespace

int main() {
  OK(cudaSetDevice(0));
  if (pinnedMemory() != 0) return 1;
  cudaStream_t stream{};
  OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  if (asyncCopies(stream) != 0) return 1;
  if (pitchedCopies(stream) != 0) return 1;
  if (hostFunctions(stream) != 0) return 1;
  OK(cudaStreamDestroy(stream));
  CHECK(cudaGetLastError() == cudaSuccess);
  std::printf("copy_paths: all checks passed\n");
  return 0;
}
