// The GPU stand-in at the CUDA driver API level: what the worker calls instead of libcuda where no
// GPU exists (CI). A test double, named as such in every log line.
#pragma once

#include "flyt/api/cu_driver_table.hpp"

namespace flyt::backend::cu {

// The driver functions of the host-memory GPU stand-in: "device" memory is host memory (a
// CUdeviceptr is the host address), copies and memsets are memcpy and fills that complete before
// the call returns, streams and events are host objects, modules are read for their kernels'
// parameter layouts (backend/src/cubin_layout.hpp) but kernels are never executed and module
// variables cannot be read (lookups answer CUDA_ERROR_NOT_FOUND). One device, ordinal 0, that
// reports an H100's attributes. Members left null are not supported (CUDA_ERROR_NOT_SUPPORTED).
//
// The table is process-wide (a worker process serves one session); its functions are thread-safe,
// throw nothing, and the current context is per thread, as in the driver. The reference stays
// valid for the life of the process.
[[nodiscard]] const api::cu::DriverTable& standInDriver();

}  // namespace flyt::backend::cu
