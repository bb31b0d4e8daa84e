// An Executor runs a session's CUDA calls: CudaExecutor on the GPU through NVIDIA's runtime,
// StandInExecutor in host memory where no GPU exists (a test double, named as such in every log).
//
// The functions with generated handlers are virtual members with NVIDIA's signatures, declared from
// the generated FLYT_API_GENERATED_SIGNATURES list; an executor overrides what it supports and the
// rest answer cudaErrorNotSupported. The operations of hand-written handlers are declared below.
// Arguments have been decoded and validated (pointers against the session's allocations, handles
// against its tables) before an executor sees them. One executor per worker, used by one thread.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>
#include <string_view>

#include "flyt/api/specs.hpp"

namespace flyt::backend {

class Executor {
 public:
  virtual ~Executor() = default;
  Executor() = default;
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // "cuda (NVIDIA H200)" or "stand-in (host memory; test double, no GPU)", for logs.
  [[nodiscard]] virtual std::string_view describe() const = 0;

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"  // the defaults ignore their arguments
#define FLYT_DECLARE_GENERATED(name, params, args) \
  virtual cudaError_t name params { return cudaErrorNotSupported; }
  FLYT_API_GENERATED_SIGNATURES(FLYT_DECLARE_GENERATED)
#undef FLYT_DECLARE_GENERATED
#pragma GCC diagnostic pop

  // Custom handlers (hand-written on both sides).
  virtual cudaError_t copyToDevice(void* device, const void* host, std::size_t bytes) = 0;
  virtual cudaError_t copyToHost(void* host, const void* device, std::size_t bytes) = 0;
  virtual cudaError_t copyOnDevice(void* to, const void* from, std::size_t bytes) = 0;
  virtual cudaError_t deviceProperties(cudaDeviceProp* prop, int device) = 0;
};

// The GPU through NVIDIA's runtime, or an error naming why there is none (no driver, no device).
[[nodiscard]] std::unique_ptr<Executor> makeCudaExecutor(std::string* whyNot);

// The host-memory stand-in: device memory is host memory, kernels are not executed. A test double
// for machines without a GPU (CI); every session that uses it logs so at warn level.
[[nodiscard]] std::unique_ptr<Executor> makeStandInExecutor();

}  // namespace flyt::backend
