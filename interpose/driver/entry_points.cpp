// The driver's entry points that need no device: cuInit, cuDriverGetVersion, cuGetProcAddress (both
// ABIs), the error strings, the profiler switches and the module loading mode.
//
// cuGetProcAddress answers from Flyt's own table (cu_procs.inc, generated from cudaTypedefs.h and
// api/cuda.toml): for a name, the newest variant introduced at or before the requested CUDA version,
// the per-thread-default-stream one (_ptds/_ptsz) when the flags ask for it and it exists. Every
// export of NVIDIA's driver is in the table, so NVIDIA's runtime, which binds the whole driver
// surface at start-up, never sees a name missing; a name Flyt does not implement resolves to its
// "unsupported" stub.
#include <cuda.h>
#include <cudaProfiler.h>

#include <cstring>
#include <string_view>

#include "driver_client.hpp"
#include "driver_internal.hpp"
#include "flyt/api/cu_errors.inc"
#include "flyt/transport/log.hpp"
#include "proc_table.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {
namespace {

CUresult procAddress(const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags,
                     CUdriverProcAddressQueryResult* status) noexcept {
  // cuBLAS asks for "" with a null pfn; NVIDIA's runtime passes a null status.
  if (symbol == nullptr || pfn == nullptr) {
    if (status != nullptr) *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    return symbol == nullptr ? CUDA_ERROR_INVALID_VALUE : CUDA_ERROR_NOT_FOUND;
  }
  const bool perThread = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;
  const ProcLookup found = lookupProc(symbol, cudaVersion, perThread);
  *pfn = found.address;
  if (status != nullptr) {
    *status = found.address != nullptr ? CU_GET_PROC_ADDRESS_SUCCESS
              : found.named             ? CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT
                                        : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  }
  if (found.address == nullptr) {
    flyt::logger("interpose").debug("cuGetProcAddress: {} at CUDA {} is not a driver function", symbol, cudaVersion);
    return CUDA_ERROR_NOT_FOUND;
  }
  return CUDA_SUCCESS;
}

struct ErrorText {
  CUresult value;
  const char* name;
  const char* description;
};
#define FLYT_ERROR_ROW(name, value, description) ErrorText{static_cast<CUresult>(value), #name, description},
constexpr ErrorText kErrors[] = {FLYT_CU_ERRORS(FLYT_ERROR_ROW)};
#undef FLYT_ERROR_ROW

const ErrorText* errorText(CUresult error) noexcept {
  for (const auto& row : kErrors) {
    if (row.value == error) return &row;
  }
  return nullptr;
}

}  // namespace
}  // namespace flyt::interpose::cu

using namespace flyt::interpose::cu;
namespace api = flyt::api;

FLYT_CU_EXPORT CUresult cuInit(unsigned int flags) {
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  return DriverState::get().init();
}

// The version of the worker's driver, capped at the CUDA this library was built against (a newer
// runtime would ask for entry points this library does not know). Before a session exists (or when
// none can be had) this build's version: cuInit then reports why there is no device.
FLYT_CU_EXPORT CUresult cuDriverGetVersion(int* driverVersion) {
  if (driverVersion == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *driverVersion = ::flyt::interpose::cu::driverVersion();
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuGetProcAddress(const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags) {
  return procAddress(symbol, pfn, cudaVersion, flags, nullptr);
}

FLYT_CU_EXPORT CUresult cuGetProcAddress_v2(const char* symbol, void** pfn, int cudaVersion, cuuint64_t flags,
                                            CUdriverProcAddressQueryResult* symbolStatus) {
  return procAddress(symbol, pfn, cudaVersion, flags, symbolStatus);
}

FLYT_CU_EXPORT CUresult cuGetErrorName(CUresult error, const char** pStr) {
  if (pStr == nullptr) return CUDA_ERROR_INVALID_VALUE;
  const auto* row = errorText(error);
  *pStr = row == nullptr ? nullptr : row->name;
  return row == nullptr ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuGetErrorString(CUresult error, const char** pStr) {
  if (pStr == nullptr) return CUDA_ERROR_INVALID_VALUE;
  const auto* row = errorText(error);
  *pStr = row == nullptr ? nullptr : row->description;
  return row == nullptr ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

// The profiler is the worker's business (run the node under Nsight to profile): these succeed and
// do nothing, as the driver's do when no profiler is attached.
FLYT_CU_EXPORT CUresult cuProfilerInitialize(const char*, const char*, CUoutput_mode) { return CUDA_SUCCESS; }
FLYT_CU_EXPORT CUresult cuProfilerStart() { return DriverState::get().init(); }
FLYT_CU_EXPORT CUresult cuProfilerStop() { return DriverState::get().init(); }

// Modules are loaded eagerly on the worker when the application loads them (lazy loading is the
// worker's driver's affair): report the default, lazy, as CUDA 12.2+ drivers do.
FLYT_CU_EXPORT CUresult cuModuleGetLoadingMode(CUmoduleLoadingMode* mode) {
  if (mode == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *mode = CU_MODULE_LAZY_LOADING;
  return CUDA_SUCCESS;
}
