// CUDA graphs: a stream capture of kernels and a copy, replayed ten times; an explicitly built graph
// (kernel, memset and memcpy nodes with dependencies); and an update of an instantiated graph's
// kernel parameters (cudaGraphExecKernelNodeSetParams). Results against the CPU.
#include <vector>

#include "../gpu_check.cuh"

__global__ void axpb(float* x, float a, float b, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] = a * x[i] + b;
}

int main() {
  require_cuda_device();
  constexpr int n = 1 << 16;
  std::vector<float> host(n), got(n);
  for (int i = 0; i < n; ++i) host[i] = static_cast<float>(i % 100);
  float *d, *out;
  CHECK_CUDA(cudaMalloc(&d, n * 4));
  CHECK_CUDA(cudaMalloc(&out, n * 4));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  CHECK_CUDA(cudaMemcpy(d, host.data(), n * 4, cudaMemcpyHostToDevice));

  // Captured: x = 2x + 1, then x = x - 3, then out = x.
  cudaGraph_t graph;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  axpb<<<n / 256, 256, 0, stream>>>(d, 2.0f, 1.0f, n);
  axpb<<<n / 256, 256, 0, stream>>>(d, 1.0f, -3.0f, n);
  CHECK_CUDA(cudaMemcpyAsync(out, d, n * 4, cudaMemcpyDeviceToDevice, stream));
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  size_t nodes = 0;
  CHECK_CUDA(cudaGraphGetNodes(graph, nullptr, &nodes));
  if (nodes != 3) return fail("graphs", "the capture has %zu nodes, expected 3", nodes);
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (int r = 0; r < 10; ++r) CHECK_CUDA(cudaGraphLaunch(exec, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  CHECK_CUDA(cudaMemcpy(got.data(), out, n * 4, cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; ++i) {
    float want = host[i];
    for (int r = 0; r < 10; ++r) want = want * 2.0f + 1.0f - 3.0f;
    if (got[i] != want) return fail("graphs", "captured replay [%d] = %f, expected %f", i, got[i], want);
  }
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaGraphDestroy(graph));

  // Built node by node: memset(d, 0) -> kernel (x = 1x + 5) -> memcpy(out <- d).
  CHECK_CUDA(cudaGraphCreate(&graph, 0));
  cudaGraphNode_t memsetNode, kernelNode, copyNode;
  cudaMemsetParams memset{};
  memset.dst = d;
  memset.value = 0;
  memset.elementSize = 4;
  memset.width = n;
  memset.height = 1;
  CHECK_CUDA(cudaGraphAddMemsetNode(&memsetNode, graph, nullptr, 0, &memset));
  float a = 1.0f, b = 5.0f;
  int count = n;
  void* args[] = {&d, &a, &b, &count};
  cudaKernelNodeParams kernel{};
  kernel.func = reinterpret_cast<void*>(axpb);
  kernel.gridDim = dim3(n / 256);
  kernel.blockDim = dim3(256);
  kernel.kernelParams = args;
  CHECK_CUDA(cudaGraphAddKernelNode(&kernelNode, graph, &memsetNode, 1, &kernel));
  CHECK_CUDA(cudaGraphAddMemcpyNode1D(&copyNode, graph, &kernelNode, 1, out, d, n * 4, cudaMemcpyDeviceToDevice));
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  CHECK_CUDA(cudaGraphLaunch(exec, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  CHECK_CUDA(cudaMemcpy(got.data(), out, n * 4, cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; ++i) {
    if (got[i] != 5.0f) return fail("graphs", "built graph [%d] = %f, expected 5", i, got[i]);
  }

  // The instantiated graph's kernel, updated to x = 1x + 7.
  b = 7.0f;
  CHECK_CUDA(cudaGraphExecKernelNodeSetParams(exec, kernelNode, &kernel));
  CHECK_CUDA(cudaGraphLaunch(exec, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  CHECK_CUDA(cudaMemcpy(got.data(), out, n * 4, cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; ++i) {
    if (got[i] != 7.0f) return fail("graphs", "updated graph [%d] = %f, expected 7", i, got[i]);
  }
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaGraphDestroy(graph));
  CHECK_CUDA(cudaStreamDestroy(stream));
  return pass("graphs");
}
