// A kernel compiled at run time: NVRTC makes PTX and a cubin of a source string, the driver API
// loads each (cuModuleLoadDataEx: the PTX is JIT-compiled by the driver) and launches it. The
// driver's functions come from the runtime (cudaGetDriverEntryPointByVersion), as an application
// that does not link libcuda gets them.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <nvrtc.h>

#include <string>
#include <vector>

#include "library_check.cuh"

#define CHECK_CU(call) CHECK_LIBRARY(call, CUDA_SUCCESS, statusNumber)

static const char* kSource = R"(
extern "C" __global__ void saxpy(float a, const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
})";

static std::vector<char> compile(bool cubin) {
  nvrtcProgram program;
  if (nvrtcCreateProgram(&program, kSource, "saxpy.cu", 0, nullptr, nullptr) != NVRTC_SUCCESS) std::exit(kExitFailed);
  const char* options[] = {cubin ? "--gpu-architecture=sm_90" : "--gpu-architecture=compute_90"};
  if (nvrtcCompileProgram(program, 1, options) != NVRTC_SUCCESS) {
    size_t size = 0;
    nvrtcGetProgramLogSize(program, &size);
    std::string log(size, '\0');
    nvrtcGetProgramLog(program, log.data());
    std::fprintf(stderr, "FAIL nvrtc: %s\n", log.c_str());
    std::exit(kExitFailed);
  }
  size_t size = 0;
  std::vector<char> image;
  if (cubin) {
    nvrtcGetCUBINSize(program, &size);
    image.resize(size);
    nvrtcGetCUBIN(program, image.data());
  } else {
    nvrtcGetPTXSize(program, &size);
    image.resize(size);
    nvrtcGetPTX(program, image.data());
  }
  nvrtcDestroyProgram(&program);
  return image;
}

template <class Fn>
static Fn driver(const char* name) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult status{};
  CHECK_CUDA(cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &status));
  if (fn == nullptr) std::exit(kExitFailed);
  return reinterpret_cast<Fn>(fn);
}

int main() {
  require_cuda_device();
  auto cuModuleLoadDataEx = driver<PFN_cuModuleLoadDataEx_v2010>("cuModuleLoadDataEx");
  auto cuModuleGetFunction = driver<PFN_cuModuleGetFunction_v2000>("cuModuleGetFunction");
  auto cuModuleUnload = driver<PFN_cuModuleUnload_v2000>("cuModuleUnload");
  auto cuMemAlloc = driver<PFN_cuMemAlloc_v3020>("cuMemAlloc");
  auto cuMemFree = driver<PFN_cuMemFree_v3020>("cuMemFree");
  auto cuMemcpyHtoD = driver<PFN_cuMemcpyHtoD_v3020>("cuMemcpyHtoD");
  auto cuMemcpyDtoH = driver<PFN_cuMemcpyDtoH_v3020>("cuMemcpyDtoH");
  auto cuLaunchKernel = driver<PFN_cuLaunchKernel_v4000>("cuLaunchKernel");
  constexpr int n = 1 << 16;
  CHECK_CUDA(cudaFree(nullptr));  // the runtime's primary context, current on this thread
  for (bool cubin : {false, true}) {
    const std::vector<char> image = compile(cubin);
    CUmodule module;
    char log[4096] = {};
    CUjit_option options[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void* values[] = {log, reinterpret_cast<void*>(sizeof log)};
    CHECK_CU(cuModuleLoadDataEx(&module, image.data(), 2, options, values));
    CUfunction saxpy;
    CHECK_CU(cuModuleGetFunction(&saxpy, module, "saxpy"));
    std::vector<float> x(n), y(n), got(n);
    for (int i = 0; i < n; ++i) {
      x[i] = static_cast<float>(i);
      y[i] = 1.0f;
    }
    CUdeviceptr dx, dy;
    CHECK_CU(cuMemAlloc(&dx, n * 4));
    CHECK_CU(cuMemAlloc(&dy, n * 4));
    CHECK_CU(cuMemcpyHtoD(dx, x.data(), n * 4));
    CHECK_CU(cuMemcpyHtoD(dy, y.data(), n * 4));
    float a = 3.0f;
    int count = n;
    void* args[] = {&a, &dx, &dy, &count};
    CHECK_CU(cuLaunchKernel(saxpy, n / 256, 1, 1, 256, 1, 1, 0, nullptr, args, nullptr));
    CHECK_CU(cuMemcpyDtoH(got.data(), dy, n * 4));
    for (int i = 0; i < n; ++i) {
      if (got[i] != 3.0f * i + 1.0f) return fail("nvrtc", "%s: y[%d] = %f", cubin ? "cubin" : "ptx", i, got[i]);
    }
    CHECK_CU(cuMemFree(dx));
    CHECK_CU(cuMemFree(dy));
    CHECK_CU(cuModuleUnload(module));
  }
  return pass("nvrtc");
}
