// A kernel and a global for hostile_client_test and hostile_driver_test: uploaded by hand-built
// calls to find out what the worker does with absurd launch geometry, shared memory and parameter
// blocks, and with an unloaded module's functions and globals. Compiled to a fatbin, never run on a
// GPU by the tests (the workers use the GPU stand-in).
extern "C" __global__ void hostile_scale(float* data, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) data[i] *= 2.0f;
}

__device__ float hostile_table[64];
