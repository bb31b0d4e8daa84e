// Graphs built node by node: kernel, memset, memcpy (device to device) and empty nodes, the list of
// a graph's nodes, and a kernel node's update in an instantiated graph. All are synchronous (each
// returns a node the application builds on, or an error it must see). Capture, instantiation,
// launch and destruction are generated (cuda.toml).
//
// Wire (backend/src/driver/serve_graphs.cpp):
//   cuGraphAddKernelNode_v2  {u64 graph, u64 n, n x u64 dependency} + a launch's encoding (launch.cpp:
//                            u64 function, u32 grid x y z, block x y z, u32 shared, u64 stream 0,
//                            u32 block bytes, block) -> {u64 node}
//   cuGraphExecKernelNodeSetParams_v2  {u64 exec, u64 node} + the same launch encoding
//   cuGraphAddMemsetNode     {u64 graph, u64 n, deps, CUDA_MEMSET_NODE_PARAMS, u64 context} -> {u64 node}
//   cuGraphAddMemcpyNode     {u64 graph, u64 n, deps, CUDA_MEMCPY3D, u64 context} -> {u64 node}
//   cuGraphAddEmptyNode      {u64 graph, u64 n, deps} -> {u64 node}
//   cuGraphGetNodes          {u64 graph, u64 capacity} -> {u64 count, min(count, capacity) x u64 node}
#include <cuda.h>

#include <vector>

#include "driver_client.hpp"
#include "driver_internal.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {
namespace {

CUresult startNode(std::vector<std::byte>& args, CUgraph graph, const CUgraphNode* dependencies, size_t count) {
  if (count != 0 && dependencies == nullptr) return CUDA_ERROR_INVALID_VALUE;
  api::ArgWriter writer(args);
  writer.put(wireHandle(graph));
  writer.put(static_cast<std::uint64_t>(count));
  for (size_t i = 0; i < count; ++i) writer.put(wireHandle(dependencies[i]));
  return CUDA_SUCCESS;
}

CUresult putKernel(std::vector<std::byte>& args, const CUDA_KERNEL_NODE_PARAMS* p) {
  if (p == nullptr) return CUDA_ERROR_INVALID_VALUE;
  // A CUkernel given instead of a function (CUDA 12's `kern` field) is launched as one.
  CUfunction f = p->func != nullptr ? p->func : reinterpret_cast<CUfunction>(p->kern);
  if (f == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::vector<std::byte> block;
  if (CUresult error = packParams(f, p->kernelParams, p->extra, block); error != CUDA_SUCCESS) return error;
  api::ArgWriter writer(args);
  writer.put(wireHandle(f));
  for (unsigned v : {p->gridDimX, p->gridDimY, p->gridDimZ, p->blockDimX, p->blockDimY, p->blockDimZ, p->sharedMemBytes}) {
    writer.put(static_cast<std::uint32_t>(v));
  }
  writer.put(std::uint64_t{0});  // a node runs on the stream its graph is launched on
  writer.put(static_cast<std::uint32_t>(block.size()));
  writer.putBytes(block);
  return CUDA_SUCCESS;
}

CUresult nodeCall(Method method, const std::vector<std::byte>& args, CUgraphNode* node) {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  DriverCall call;
  auto outcome = call.call(method, args);
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  std::uint64_t id = 0;
  api::ArgReader reader(outcome.results);
  if (!reader.get(id) || id == 0) return CUDA_ERROR_UNKNOWN;
  *node = reinterpret_cast<CUgraphNode>(static_cast<std::uintptr_t>(id));
  return CUDA_SUCCESS;
}

}  // namespace
}  // namespace flyt::interpose::cu

using namespace flyt::interpose::cu;
namespace api = flyt::api;

FLYT_CU_EXPORT CUresult cuGraphAddKernelNode_v2(CUgraphNode* phGraphNode, CUgraph hGraph, const CUgraphNode* dependencies,
                                                size_t numDependencies, const CUDA_KERNEL_NODE_PARAMS* nodeParams) {
  if (phGraphNode == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::vector<std::byte> args;
  if (CUresult error = startNode(args, hGraph, dependencies, numDependencies); error != CUDA_SUCCESS) return error;
  if (CUresult error = putKernel(args, nodeParams); error != CUDA_SUCCESS) return error;
  return nodeCall(Method::cuGraphAddKernelNode_v2, args, phGraphNode);
}

FLYT_CU_EXPORT CUresult cuGraphExecKernelNodeSetParams_v2(CUgraphExec hGraphExec, CUgraphNode hNode,
                                                          const CUDA_KERNEL_NODE_PARAMS* nodeParams) {
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(wireHandle(hGraphExec));
  writer.put(wireHandle(hNode));
  if (CUresult error = putKernel(args, nodeParams); error != CUDA_SUCCESS) return error;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  return DriverCall().call(Method::cuGraphExecKernelNodeSetParams_v2, args).error;
}

FLYT_CU_EXPORT CUresult cuGraphAddMemsetNode(CUgraphNode* phGraphNode, CUgraph hGraph, const CUgraphNode* dependencies,
                                             size_t numDependencies, const CUDA_MEMSET_NODE_PARAMS* memsetParams,
                                             CUcontext ctx) {
  if (phGraphNode == nullptr || memsetParams == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::vector<std::byte> args;
  if (CUresult error = startNode(args, hGraph, dependencies, numDependencies); error != CUDA_SUCCESS) return error;
  api::ArgWriter writer(args);
  writer.put(*memsetParams);
  writer.put(wireHandle(ctx));
  return nodeCall(Method::cuGraphAddMemsetNode, args, phGraphNode);
}

FLYT_CU_EXPORT CUresult cuGraphAddMemcpyNode(CUgraphNode* phGraphNode, CUgraph hGraph, const CUgraphNode* dependencies,
                                             size_t numDependencies, const CUDA_MEMCPY3D* copyParams, CUcontext ctx) {
  if (phGraphNode == nullptr || copyParams == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::vector<std::byte> args;
  if (CUresult error = startNode(args, hGraph, dependencies, numDependencies); error != CUDA_SUCCESS) return error;
  api::ArgWriter writer(args);
  writer.put(*copyParams);
  writer.put(wireHandle(ctx));
  return nodeCall(Method::cuGraphAddMemcpyNode, args, phGraphNode);
}

FLYT_CU_EXPORT CUresult cuGraphAddEmptyNode(CUgraphNode* phGraphNode, CUgraph hGraph, const CUgraphNode* dependencies,
                                            size_t numDependencies) {
  if (phGraphNode == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::vector<std::byte> args;
  if (CUresult error = startNode(args, hGraph, dependencies, numDependencies); error != CUDA_SUCCESS) return error;
  return nodeCall(Method::cuGraphAddEmptyNode, args, phGraphNode);
}

FLYT_CU_EXPORT CUresult cuGraphGetNodes(CUgraph hGraph, CUgraphNode* nodes, size_t* numNodes) {
  if (numNodes == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  const std::uint64_t capacity = nodes == nullptr ? 0 : *numNodes;
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(wireHandle(hGraph));
  writer.put(capacity);
  auto outcome = DriverCall().call(Method::cuGraphGetNodes, args);
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  api::ArgReader reader(outcome.results);
  std::uint64_t count = 0;
  if (!reader.get(count)) return CUDA_ERROR_UNKNOWN;
  const std::uint64_t listed = std::min(count, capacity);
  for (std::uint64_t i = 0; i < listed; ++i) {
    std::uint64_t id = 0;
    if (!reader.get(id)) return CUDA_ERROR_UNKNOWN;
    nodes[i] = reinterpret_cast<CUgraphNode>(static_cast<std::uintptr_t>(id));
  }
  *numNodes = nodes == nullptr ? count : listed;
  return CUDA_SUCCESS;
}
