// The hand-written worker handlers of a driver session (api/cuda.toml: handler "custom" and
// "worker"), one file per concern: serve_contexts.cpp (devices, contexts, stream state), serve_memory.cpp
// (copies and memory queries), serve_modules.cpp (images, modules, kernels, launches),
// serve_virtual_memory.cpp (reservations, physical allocations, mappings), serve_graphs.cpp (graphs
// built node by node). The wire format of each is written at the client's side (interpose/driver/).
#pragma once

#include <optional>
#include <span>
#include <vector>

#include "flyt/api/codec.hpp"
#include "serve_context.hpp"

namespace flyt::backend::cu {

// One call's input: its arguments and the bulk bytes it references (empty: none), inline or, for
// host/device copies, in the session's data region: then `region` is the same bytes, writable (a
// device-to-host copy's destination), and `persists` says they are the application's pinned memory,
// which outlives the call (a staging slot does not: the client reuses it once the call is answered).
struct CallInput {
  api::ArgReader& args;
  std::span<const std::byte> bulk;
  std::span<std::byte> region = {};
  bool persists = false;
};

// The launch configuration of cuLaunchKernel(Ex), cuOccupancyMaxActiveClusters and kernel graph
// nodes, decoded and its handles translated (serve_modules.cpp; the wire format is launch.cpp's).
struct LaunchConfig {
  std::uint64_t functionId = 0;  // the id the call named
  CUfunction function{};
  std::uint32_t dims[6] = {};
  std::uint32_t sharedBytes = 0;
  CUstream stream{};
  std::vector<CUlaunchAttribute> attributes;

  [[nodiscard]] CUlaunchConfig driverConfig() {
    CUlaunchConfig config{};
    config.gridDimX = dims[0];
    config.gridDimY = dims[1];
    config.gridDimZ = dims[2];
    config.blockDimX = dims[3];
    config.blockDimY = dims[4];
    config.blockDimZ = dims[5];
    config.sharedMemBytes = sharedBytes;
    config.hStream = stream;
    config.attrs = attributes.data();
    config.numAttrs = static_cast<unsigned>(attributes.size());
    return config;
  }
};
// {u64 function, u32 grid x y z, block x y z, u32 shared bytes, u64 stream} [+ attributes when
// `extended`]
std::optional<Outcome> readConfig(ServeContext& c, CallInput in, const char* name, bool extended, LaunchConfig& config);
// {u32 bytes, bytes}: a packed parameter block, at least as long as the function's parameters
// where their layout is known (ServeContext::paramBytes).
std::optional<Outcome> readBlock(ServeContext& c, CallInput in, const char* name, const LaunchConfig& config,
                                 std::vector<std::byte>& block);

// serve_contexts.cpp
Outcome serveGetDevices(ServeContext& c, CallInput in);
Outcome serveDeviceStatus(ServeContext& c, CallInput in);
Outcome serveSetContext(ServeContext& c, CallInput in);
Outcome servePrimaryRetain(ServeContext& c, CallInput in);
Outcome servePrimaryRelease(ServeContext& c, CallInput in);
Outcome servePrimaryReset(ServeContext& c, CallInput in);
Outcome serveContextCreate(ServeContext& c, CallInput in);
Outcome serveContextDestroy(ServeContext& c, CallInput in);
Outcome serveCaptureInfo(ServeContext& c, CallInput in);

// serve_memory.cpp
Outcome serveCopyToDevice(ServeContext& c, CallInput in, bool async);
Outcome serveCopyToHost(ServeContext& c, CallInput in, bool async);
Outcome serveCopy2D(ServeContext& c, CallInput in, bool async);
Outcome serveMemGetInfo(ServeContext& c, CallInput in);
Outcome serveAllocPitch(ServeContext& c, CallInput in);
Outcome servePoolAttribute(ServeContext& c, CallInput in, bool set);

// serve_modules.cpp
Outcome serveUploadImage(ServeContext& c, CallInput in);
Outcome serveLoadImage(ServeContext& c, CallInput in, bool library);
Outcome serveGetFunction(ServeContext& c, CallInput in);
Outcome serveEnumerateFunctions(ServeContext& c, CallInput in);
Outcome serveParamLayout(ServeContext& c, CallInput in);
Outcome serveGetKernel(ServeContext& c, CallInput in);
Outcome serveKernelFunction(ServeContext& c, CallInput in);
Outcome serveGetGlobal(ServeContext& c, CallInput in, bool library);
Outcome serveLaunch(ServeContext& c, CallInput in, bool extended);
Outcome serveActiveClusters(ServeContext& c, CallInput in);

// serve_graphs.cpp
Outcome serveGraphAddKernelNode(ServeContext& c, CallInput in);
Outcome serveGraphExecKernelNodeSetParams(ServeContext& c, CallInput in);
Outcome serveGraphAddMemsetNode(ServeContext& c, CallInput in);
Outcome serveGraphAddMemcpyNode(ServeContext& c, CallInput in);
Outcome serveGraphAddEmptyNode(ServeContext& c, CallInput in);
Outcome serveGraphGetNodes(ServeContext& c, CallInput in);

// serve_textures.cpp
Outcome serveTexObjectCreate(ServeContext& c, CallInput in);
Outcome serveSurfObjectCreate(ServeContext& c, CallInput in);
Outcome serveObjectDestroy(ServeContext& c, CallInput in, bool surface);

// serve_virtual_memory.cpp
Outcome serveAddressReserve(ServeContext& c, CallInput in);
Outcome serveAddressFree(ServeContext& c, CallInput in);
Outcome serveMemCreate(ServeContext& c, CallInput in);
Outcome serveMemRelease(ServeContext& c, CallInput in);
Outcome serveMemMap(ServeContext& c, CallInput in);
Outcome serveMemUnmap(ServeContext& c, CallInput in);
Outcome serveSetAccess(ServeContext& c, CallInput in);
Outcome serveAllocationProperties(ServeContext& c, CallInput in);

}  // namespace flyt::backend::cu
