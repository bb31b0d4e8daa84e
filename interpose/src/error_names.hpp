// Names and descriptions of cudaError_t values, from the toolkit's driver_types.h (generated table).
#pragma once

#include <cuda_runtime_api.h>

namespace flyt::interpose {

// "cudaErrorMemoryAllocation"; "cudaErrorUnknown" for a value the toolkit does not define.
[[nodiscard]] const char* errorName(cudaError_t error) noexcept;
// The first sentence of NVIDIA's documentation of the value.
[[nodiscard]] const char* errorString(cudaError_t error) noexcept;

}  // namespace flyt::interpose
