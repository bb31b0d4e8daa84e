// C = A x B with 16x16 tiles staged in shared memory, for sizes that are not multiples of the tile.
// The inputs are small integers, so every product and sum is exact in float and the device result
// must equal the CPU's exactly.
#include "gpu_check.cuh"

#include <vector>

constexpr int kTile = 16;

__global__ void matmul_tiled(const float* a, const float* b, float* c, int m, int k, int n) {
  __shared__ float tile_a[kTile][kTile];
  __shared__ float tile_b[kTile][kTile];
  const int row = blockIdx.y * kTile + threadIdx.y;
  const int col = blockIdx.x * kTile + threadIdx.x;
  float sum = 0.0f;
  for (int t = 0; t < (k + kTile - 1) / kTile; ++t) {
    const int a_col = t * kTile + threadIdx.x;
    const int b_row = t * kTile + threadIdx.y;
    tile_a[threadIdx.y][threadIdx.x] = (row < m && a_col < k) ? a[row * k + a_col] : 0.0f;
    tile_b[threadIdx.y][threadIdx.x] = (b_row < k && col < n) ? b[b_row * n + col] : 0.0f;
    __syncthreads();
    for (int i = 0; i < kTile; ++i) sum += tile_a[threadIdx.y][i] * tile_b[i][threadIdx.x];
    __syncthreads();
  }
  if (row < m && col < n) c[row * n + col] = sum;
}

int main() {
  require_cuda_device();
  constexpr int m = 250, k = 300, n = 190;
  std::vector<float> a(m * k), b(k * n), c(m * n, -1.0f), expected(m * n, 0.0f);
  for (int i = 0; i < m * k; ++i) a[i] = static_cast<float>((i * 7) % 17 - 8);
  for (int i = 0; i < k * n; ++i) b[i] = static_cast<float>((i * 5) % 13 - 6);
  for (int r = 0; r < m; ++r)
    for (int j = 0; j < k; ++j)
      for (int col = 0; col < n; ++col) expected[r * n + col] += a[r * k + j] * b[j * n + col];

  float *da = nullptr, *db = nullptr, *dc = nullptr;
  CHECK_CUDA(cudaMalloc(&da, a.size() * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&db, b.size() * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&dc, c.size() * sizeof(float)));
  CHECK_CUDA(cudaMemcpy(da, a.data(), a.size() * sizeof(float), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(db, b.data(), b.size() * sizeof(float), cudaMemcpyHostToDevice));

  const dim3 block(kTile, kTile);
  const dim3 grid((n + kTile - 1) / kTile, (m + kTile - 1) / kTile);
  matmul_tiled<<<grid, block>>>(da, db, dc, m, k, n);
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaDeviceSynchronize());
  CHECK_CUDA(cudaMemcpy(c.data(), dc, c.size() * sizeof(float), cudaMemcpyDeviceToHost));

  for (int r = 0; r < m; ++r)
    for (int col = 0; col < n; ++col)
      if (c[r * n + col] != expected[r * n + col])
        return fail("matmul_tiled", "C[%d][%d] = %f, expected %f", r, col, c[r * n + col],
                    expected[r * n + col]);
  CHECK_CUDA(cudaFree(da));
  CHECK_CUDA(cudaFree(db));
  CHECK_CUDA(cudaFree(dc));
  return pass("matmul_tiled");
}
