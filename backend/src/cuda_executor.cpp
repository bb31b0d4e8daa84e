// The GPU executor: NVIDIA's runtime (linked statically into the worker), called with the decoded
// arguments. The runtime loads the driver (libcuda.so.1) itself on first use, so the worker starts on
// machines without a driver and this factory reports why there is no GPU instead.
#include <fmt/format.h>

#include <string>

#include "flyt/backend/executor.hpp"

namespace flyt::backend {
namespace {

class CudaExecutor final : public Executor {
 public:
  explicit CudaExecutor(std::string description) : m_description(std::move(description)) {}

  std::string_view describe() const override { return m_description; }

#define FLYT_PASS_THROUGH(name, params, args) \
  cudaError_t name params override { return ::name args; }
  FLYT_API_GENERATED_SIGNATURES(FLYT_PASS_THROUGH)
#undef FLYT_PASS_THROUGH

  cudaError_t copyToDevice(void* device, const void* host, std::size_t bytes) override {
    return ::cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice);
  }
  cudaError_t copyToHost(void* host, const void* device, std::size_t bytes) override {
    return ::cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost);
  }
  cudaError_t copyOnDevice(void* to, const void* from, std::size_t bytes) override {
    return ::cudaMemcpy(to, from, bytes, cudaMemcpyDeviceToDevice);
  }
  cudaError_t deviceProperties(cudaDeviceProp* prop, int device) override {
    return ::cudaGetDeviceProperties(prop, device);
  }

 private:
  std::string m_description;
};

}  // namespace

std::unique_ptr<Executor> makeCudaExecutor(std::string* whyNot) {
  int count = 0;
  const cudaError_t error = ::cudaGetDeviceCount(&count);
  if (error != cudaSuccess || count == 0) {
    if (whyNot != nullptr) {
      *whyNot = error != cudaSuccess
                    ? fmt::format("cudaGetDeviceCount: {} ({})", ::cudaGetErrorName(error),
                                  ::cudaGetErrorString(error))
                    : std::string("the CUDA driver reports no device");
    }
    return nullptr;
  }
  cudaDeviceProp prop{};
  (void)::cudaGetDeviceProperties(&prop, 0);
  return std::make_unique<CudaExecutor>(fmt::format("cuda ({}, {} device(s))", prop.name, count));
}

}  // namespace flyt::backend
