// The other half of separable_main.cu.
__device__ int g_offset = 0;
__device__ int scaled(int v) { return 3 * v; }
