// A green context: a CUDA context limited to a partition of the GPU's SMs, for a session's SM share
// when no MPS daemon enforces it (SessionLimits::wantsGreenContext).
//
// Made with the driver's resource API (CUDA 12.4+): cuDeviceGetDevResource(SM) ->
// cuDevSmResourceSplitByCount (one group of the granted size) -> cuDevResourceGenerateDesc ->
// cuGreenCtxCreate -> cuCtxFromGreenCtx, then made current with cuCtxSetCurrent: NVIDIA's runtime
// uses the context current on the calling thread, so every runtime call of that thread runs on the
// partition. The worker does not link libcuda: the entry points come from
// cudaGetDriverEntryPointByVersion.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "flyt/transport/error.hpp"

namespace flyt::backend {

struct GreenContext {
  CUgreenCtx green = nullptr;
  CUcontext context = nullptr;  // the green context as a CUcontext, current on the creating thread
  std::uint32_t smCount = 0;    // the SMs the partition really got
  std::uint32_t deviceSmCount = 0;
};

// Creates the partition for `percent` (1..99) of device `ordinal`'s SMs (greenContextSmCount,
// session_limits.hpp, with the driver's granularity) and makes it current on the calling thread.
// kUnsupported when the driver lacks the API or refuses the split, naming the step.
[[nodiscard]] transport::Result<GreenContext> makeGreenContext(int ordinal, std::uint32_t percent);

}  // namespace flyt::backend
