// Graphs built node by node (interpose/driver/graphs.cpp is the other side, with the wire
// formats). Every node's handles are the session's own; a kernel node's parameters arrive as the
// packed block a launch carries (the driver copies it into the node); memset and memcpy nodes may
// touch only the session's device ranges, checked from their first byte to their last.
#include "handlers.hpp"

namespace flyt::backend::cu {
namespace {

constexpr std::uint64_t kMaxDependencies = 4096;

// {u64 graph, u64 count, count x u64 node}: the graph and the nodes the new one depends on.
std::optional<Outcome> readGraphAndDependencies(ServeContext& c, CallInput in, const char* name, CUgraph& graph,
                                                std::vector<CUgraphNode>& dependencies) {
  CUgraph id{};
  std::uint64_t count = 0;
  if (!in.args.get(id) || !in.args.get(count) || count > kMaxDependencies) {
    return c.malformed(fmt::format("{}: bad arguments", name));
  }
  if (auto refused = c.handles().use(name, "hGraph", id, {HandleKind::graph}, &graph)) return refused;
  if (graph == nullptr) return c.malformed(fmt::format("{}: a null graph", name));
  dependencies.resize(count);
  for (auto& node : dependencies) {
    CUgraphNode wire{};
    if (!in.args.get(wire)) return c.malformed(fmt::format("{}: short dependencies", name));
    if (auto refused = c.handles().use(name, "dependencies", wire, {HandleKind::graphNode}, &node)) return refused;
    if (node == nullptr) return c.malformed(fmt::format("{}: a null dependency", name));
  }
  return std::nullopt;
}

Outcome created(ServeContext& c, CUresult error, CUgraphNode node) {
  Outcome out;
  out.error = error;
  if (error == CUDA_SUCCESS) api::ArgWriter(out.results).put(c.handles().create(HandleKind::graphNode, node));
  return out;
}

// A kernel's launch as a node's parameters: the function, its geometry and its block.
struct KernelNode {
  LaunchConfig config;
  std::vector<std::byte> block;
  std::size_t blockSize = 0;
  void* extra[5] = {};

  CUDA_KERNEL_NODE_PARAMS params() {
    blockSize = block.size();
    extra[0] = CU_LAUNCH_PARAM_BUFFER_POINTER;
    extra[1] = block.data();
    extra[2] = CU_LAUNCH_PARAM_BUFFER_SIZE;
    extra[3] = &blockSize;
    extra[4] = CU_LAUNCH_PARAM_END;
    CUDA_KERNEL_NODE_PARAMS p{};
    p.func = config.function;
    p.gridDimX = config.dims[0];
    p.gridDimY = config.dims[1];
    p.gridDimZ = config.dims[2];
    p.blockDimX = config.dims[3];
    p.blockDimY = config.dims[4];
    p.blockDimZ = config.dims[5];
    p.sharedMemBytes = config.sharedBytes;
    p.extra = extra;
    return p;
  }
};

std::optional<Outcome> readKernel(ServeContext& c, CallInput in, const char* name, KernelNode& node) {
  if (auto refused = readConfig(c, in, name, false, node.config)) return refused;
  if (auto refused = readBlock(c, in, name, node.config, node.block)) return refused;
  if (!in.args.exhausted()) return c.malformed(fmt::format("{}: trailing arguments", name));
  return std::nullopt;
}

// The last byte a 3D copy side touches, from its origin, pitch, height and the extent.
std::uint64_t copyEnd(std::uint64_t x, std::uint64_t y, std::uint64_t z, std::uint64_t pitch, std::uint64_t height,
                      const CUDA_MEMCPY3D& p) {
  using api::satAdd;
  using api::satMul;
  const std::uint64_t rows = satAdd(satMul(satAdd(z, p.Depth - 1), height), satAdd(y, p.Height - 1));
  return satAdd(satAdd(satMul(rows, pitch), x), p.WidthInBytes);
}

}  // namespace

Outcome serveGraphAddKernelNode(ServeContext& c, CallInput in) {
  if (c.driver().cuGraphAddKernelNode_v2 == nullptr) return c.unsupported("cuGraphAddKernelNode_v2");
  constexpr const char* kName = "cuGraphAddKernelNode_v2";
  CUgraph graph{};
  std::vector<CUgraphNode> dependencies;
  if (auto refused = readGraphAndDependencies(c, in, kName, graph, dependencies)) return *refused;
  KernelNode kernel;
  if (auto refused = readKernel(c, in, kName, kernel)) return *refused;
  const CUDA_KERNEL_NODE_PARAMS params = kernel.params();
  CUgraphNode node{};
  const CUresult error = c.driver().cuGraphAddKernelNode_v2(&node, graph, dependencies.data(), dependencies.size(), &params);
  return created(c, error, node);
}

Outcome serveGraphExecKernelNodeSetParams(ServeContext& c, CallInput in) {
  if (c.driver().cuGraphExecKernelNodeSetParams_v2 == nullptr) return c.unsupported("cuGraphExecKernelNodeSetParams_v2");
  constexpr const char* kName = "cuGraphExecKernelNodeSetParams_v2";
  CUgraphExec exec{}, execId{};
  CUgraphNode node{}, nodeId{};
  if (!in.args.get(execId) || !in.args.get(nodeId)) return c.malformed(fmt::format("{}: bad arguments", kName));
  if (auto refused = c.handles().use(kName, "hGraphExec", execId, {HandleKind::graphExec}, &exec)) return *refused;
  if (auto refused = c.handles().use(kName, "hNode", nodeId, {HandleKind::graphNode}, &node)) return *refused;
  KernelNode kernel;
  if (auto refused = readKernel(c, in, kName, kernel)) return *refused;
  const CUDA_KERNEL_NODE_PARAMS params = kernel.params();
  Outcome out;
  out.error = c.driver().cuGraphExecKernelNodeSetParams_v2(exec, node, &params);
  return out;
}

Outcome serveGraphAddMemsetNode(ServeContext& c, CallInput in) {
  if (c.driver().cuGraphAddMemsetNode == nullptr) return c.unsupported("cuGraphAddMemsetNode");
  constexpr const char* kName = "cuGraphAddMemsetNode";
  CUgraph graph{};
  std::vector<CUgraphNode> dependencies;
  if (auto refused = readGraphAndDependencies(c, in, kName, graph, dependencies)) return *refused;
  CUDA_MEMSET_NODE_PARAMS p{};
  CUcontext contextId{}, context{};
  if (!in.args.get(p) || !in.args.get(contextId) || !in.args.exhausted()) return c.malformed(fmt::format("{}: bad arguments", kName));
  if (auto refused = c.handles().use(kName, "ctx", contextId, {HandleKind::context}, &context)) return *refused;
  if (p.elementSize != 1 && p.elementSize != 2 && p.elementSize != 4) {
    return c.malformed(fmt::format("{}: element size {}", kName, p.elementSize));
  }
  if (p.width == 0 || p.height == 0) return c.malformed(fmt::format("{}: an empty memset", kName));
  const std::uint64_t row = api::satMul(p.width, p.elementSize);
  const std::uint64_t bytes = api::satAdd(api::satMul(p.height - 1, p.height > 1 ? p.pitch : 0), row);
  if (auto refused = c.deviceRange(kName, "dst", p.dst, bytes)) return *refused;
  CUgraphNode node{};
  const CUresult error =
      c.driver().cuGraphAddMemsetNode(&node, graph, dependencies.data(), dependencies.size(), &p, context);
  return created(c, error, node);
}

Outcome serveGraphAddMemcpyNode(ServeContext& c, CallInput in) {
  if (c.driver().cuGraphAddMemcpyNode == nullptr) return c.unsupported("cuGraphAddMemcpyNode");
  constexpr const char* kName = "cuGraphAddMemcpyNode";
  CUgraph graph{};
  std::vector<CUgraphNode> dependencies;
  if (auto refused = readGraphAndDependencies(c, in, kName, graph, dependencies)) return *refused;
  CUDA_MEMCPY3D p{};
  CUcontext contextId{}, context{};
  if (!in.args.get(p) || !in.args.get(contextId) || !in.args.exhausted()) return c.malformed(fmt::format("{}: bad arguments", kName));
  if (auto refused = c.handles().use(kName, "ctx", contextId, {HandleKind::context}, &context)) return *refused;
  auto isDevice = [](CUmemorytype type) { return type == CU_MEMORYTYPE_DEVICE || type == CU_MEMORYTYPE_UNIFIED; };
  if (!isDevice(p.srcMemoryType) || !isDevice(p.dstMemoryType)) {
    Outcome out = c.unsupported(kName);
    out.detail = fmt::format("{}: only copies between device memory are served in graphs", kName);
    return out;
  }
  if (p.WidthInBytes == 0 || p.Height == 0 || p.Depth == 0) return c.malformed(fmt::format("{}: an empty copy", kName));
  // Unified sides name device memory through the host pointer field.
  const CUdeviceptr src = p.srcMemoryType == CU_MEMORYTYPE_DEVICE ? p.srcDevice : reinterpret_cast<CUdeviceptr>(p.srcHost);
  const CUdeviceptr dst = p.dstMemoryType == CU_MEMORYTYPE_DEVICE ? p.dstDevice : reinterpret_cast<CUdeviceptr>(p.dstHost);
  const std::uint64_t srcPitch = p.srcPitch != 0 ? p.srcPitch : p.WidthInBytes;
  const std::uint64_t dstPitch = p.dstPitch != 0 ? p.dstPitch : p.WidthInBytes;
  const std::uint64_t srcHeight = p.srcHeight != 0 ? p.srcHeight : p.Height;
  const std::uint64_t dstHeight = p.dstHeight != 0 ? p.dstHeight : p.Height;
  if (auto refused = c.deviceRange(kName, "src", src, copyEnd(p.srcXInBytes, p.srcY, p.srcZ, srcPitch, srcHeight, p))) {
    return *refused;
  }
  if (auto refused = c.deviceRange(kName, "dst", dst, copyEnd(p.dstXInBytes, p.dstY, p.dstZ, dstPitch, dstHeight, p))) {
    return *refused;
  }
  CUgraphNode node{};
  const CUresult error =
      c.driver().cuGraphAddMemcpyNode(&node, graph, dependencies.data(), dependencies.size(), &p, context);
  return created(c, error, node);
}

Outcome serveGraphAddEmptyNode(ServeContext& c, CallInput in) {
  if (c.driver().cuGraphAddEmptyNode == nullptr) return c.unsupported("cuGraphAddEmptyNode");
  constexpr const char* kName = "cuGraphAddEmptyNode";
  CUgraph graph{};
  std::vector<CUgraphNode> dependencies;
  if (auto refused = readGraphAndDependencies(c, in, kName, graph, dependencies)) return *refused;
  if (!in.args.exhausted()) return c.malformed(fmt::format("{}: trailing arguments", kName));
  CUgraphNode node{};
  const CUresult error = c.driver().cuGraphAddEmptyNode(&node, graph, dependencies.data(), dependencies.size());
  return created(c, error, node);
}

// args {u64 graph, u64 capacity} -> results {u64 count, min(count, capacity) x u64 node}. Nodes the
// session has not seen yet (made by a stream capture) get their ids here.
Outcome serveGraphGetNodes(ServeContext& c, CallInput in) {
  if (c.driver().cuGraphGetNodes == nullptr) return c.unsupported("cuGraphGetNodes");
  constexpr const char* kName = "cuGraphGetNodes";
  CUgraph id{}, graph{};
  std::uint64_t capacity = 0;
  if (!in.args.get(id) || !in.args.get(capacity) || !in.args.exhausted() || capacity > (1u << 20)) {
    return c.malformed(fmt::format("{}: bad arguments", kName));
  }
  if (auto refused = c.handles().use(kName, "hGraph", id, {HandleKind::graph}, &graph)) return *refused;
  Outcome out;
  std::size_t count = 0;
  if ((out.error = c.driver().cuGraphGetNodes(graph, nullptr, &count)) != CUDA_SUCCESS) return out;
  std::vector<CUgraphNode> nodes(std::min<std::uint64_t>(count, capacity));
  if (!nodes.empty()) {
    std::size_t filled = nodes.size();
    if ((out.error = c.driver().cuGraphGetNodes(graph, nodes.data(), &filled)) != CUDA_SUCCESS) return out;
    nodes.resize(std::min(filled, nodes.size()));
  }
  api::ArgWriter writer(out.results);
  writer.put(static_cast<std::uint64_t>(count));
  for (auto node : nodes) writer.put(c.handles().lookup(HandleKind::graphNode, node));
  return out;
}

}  // namespace flyt::backend::cu
