// A kernel for hostile_client_test: uploaded by hand-built calls to find out what the worker does
// with absurd launch geometry, shared memory and parameter blocks. Compiled to a fatbin, never run
// on a GPU by the test (the workers use the GPU stand-in).
extern "C" __global__ void hostile_scale(float* data, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) data[i] *= 2.0f;
}
