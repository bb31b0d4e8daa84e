// Kernels that driver_paths.cpp loads as a module image (built into a fatbin by nvcc -fatbin).
extern "C" __global__ void scale_add(float* out, const float* in, float factor, float offset, unsigned n) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i] * factor + offset;
}

extern "C" __global__ void fill_index(unsigned* out, unsigned n) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = i * 3u + 1u;
}

__device__ unsigned g_counter[4];

// Busy for `cycles` clock cycles (a stream that is not idle yet).
extern "C" __global__ void spin(unsigned long long cycles) {
  const long long start = clock64();
  while (clock64() - start < static_cast<long long>(cycles)) {
  }
}
