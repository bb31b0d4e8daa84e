// A green context: a CUDA context limited to a partition of the GPU's SMs, for a session's SM share
// when no MPS daemon enforces it (SessionLimits::wantsGreenContext).
//
// Made with the driver's resource API (CUDA 12.4+): cuDeviceGetDevResource(SM) ->
// cuDevSmResourceSplitByCount (one group of the granted size) -> cuDevResourceGenerateDesc ->
// cuGreenCtxCreate -> cuCtxFromGreenCtx. The runtime cut makes it current with cuCtxSetCurrent:
// NVIDIA's runtime uses the context current on the calling thread, so every runtime call of that
// thread runs on the partition. The driver cut hands it to the application in place of device 0's
// primary context (driver/serve_contexts.cpp). The worker does not link libcuda: the entry points
// come from cudaGetDriverEntryPointByVersion (runtime cut) or the loaded driver's table (driver cut).
#pragma once

#include <cuda.h>

#include <cstdint>

#include "flyt/transport/error.hpp"

namespace flyt::backend {

struct GreenContext {
  CUgreenCtx green = nullptr;
  CUcontext context = nullptr;  // the green context as a CUcontext
  CUdevResourceDesc desc = nullptr;  // the partition: more green contexts of it (cuCtxCreate, driver cut)
  std::uint32_t smCount = 0;    // the SMs the partition really got
  std::uint32_t deviceSmCount = 0;
};

// The driver entry points a green context needs.
struct GreenContextApi {
  CUresult (*deviceGet)(CUdevice*, int) = nullptr;
  CUresult (*getResource)(CUdevice, CUdevResource*, CUdevResourceType) = nullptr;
  CUresult (*split)(CUdevResource*, unsigned int*, const CUdevResource*, CUdevResource*, unsigned int,
                    unsigned int) = nullptr;
  CUresult (*generateDesc)(CUdevResourceDesc*, CUdevResource*, unsigned int) = nullptr;
  CUresult (*create)(CUgreenCtx*, CUdevResourceDesc, CUdevice, unsigned int) = nullptr;
  CUresult (*toContext)(CUcontext*, CUgreenCtx) = nullptr;
  CUresult (*setCurrent)(CUcontext) = nullptr;
  CUresult (*destroy)(CUgreenCtx) = nullptr;
  [[nodiscard]] bool complete() const {
    return deviceGet && getResource && split && generateDesc && create && toContext && setCurrent && destroy;
  }
};

// Creates the partition for `percent` (1..99) of device `ordinal`'s SMs (greenContextSmCount,
// session_limits.hpp, with the driver's granularity) and makes it current on the calling thread
// (runtime cut). kUnsupported when the driver lacks the API or refuses the split, naming the step.
[[nodiscard]] transport::Result<GreenContext> makeGreenContext(int ordinal, std::uint32_t percent);
// The same with the given entry points, made current only when `makeCurrent`.
[[nodiscard]] transport::Result<GreenContext> makeGreenContext(const GreenContextApi& api, int ordinal,
                                                               std::uint32_t percent, bool makeCurrent);
// One more green context of `partition`'s SMs on device `ordinal`, not made current.
[[nodiscard]] transport::Result<GreenContext> anotherGreenContext(const GreenContextApi& api,
                                                                  const GreenContext& partition, int ordinal);

}  // namespace flyt::backend
