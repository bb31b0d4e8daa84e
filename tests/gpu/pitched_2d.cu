// A pitched 2D allocation: cudaMallocPitch, cudaMemset2D over the whole matrix, cudaMemcpy2D from a
// packed host matrix, a kernel that walks rows by the pitch, cudaMemset2D over a sub-rectangle, and
// cudaMemcpy2D back into a host matrix with a different (wider) pitch. Checks every element and that
// the host's padding columns are untouched.
#include "gpu_check.cuh"

#include <cstring>
#include <vector>

constexpr int kWidth = 300;   // floats per row
constexpr int kHeight = 200;  // rows

__global__ void transform(float* matrix, size_t pitch, int width, int height) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  const int row = blockIdx.y * blockDim.y + threadIdx.y;
  if (col < width && row < height) {
    float* line = reinterpret_cast<float*>(reinterpret_cast<char*>(matrix) + row * pitch);
    line[col] = line[col] * 2.0f + static_cast<float>(row);
  }
}

int main() {
  require_cuda_device();
  const size_t row_bytes = kWidth * sizeof(float);
  float* device = nullptr;
  size_t pitch = 0;
  CHECK_CUDA(cudaMallocPitch(reinterpret_cast<void**>(&device), &pitch, row_bytes, kHeight));
  if (pitch < row_bytes)
    return fail("pitched_2d", "pitch %zu is smaller than a row (%zu bytes)", pitch, row_bytes);
  std::printf("pitch %zu bytes for rows of %zu bytes\n", pitch, row_bytes);

  // 0xFF everywhere first, then check that a full-height 2D memset really reaches every row.
  CHECK_CUDA(cudaMemset2D(device, pitch, 0xFF, row_bytes, kHeight));
  std::vector<unsigned char> bytes(row_bytes * kHeight, 0);
  CHECK_CUDA(cudaMemcpy2D(bytes.data(), row_bytes, device, pitch, row_bytes, kHeight,
                          cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < bytes.size(); ++i)
    if (bytes[i] != 0xFF)
      return fail("pitched_2d", "byte %zu after cudaMemset2D(0xFF) = 0x%02x", i, bytes[i]);

  std::vector<float> packed(kWidth * kHeight);
  for (int i = 0; i < kWidth * kHeight; ++i) packed[i] = static_cast<float>(i % 977);
  CHECK_CUDA(cudaMemcpy2D(device, pitch, packed.data(), row_bytes, row_bytes, kHeight,
                          cudaMemcpyHostToDevice));
  const dim3 block(32, 8);
  const dim3 grid((kWidth + block.x - 1) / block.x, (kHeight + block.y - 1) / block.y);
  transform<<<grid, block>>>(device, pitch, kWidth, kHeight);
  CHECK_CUDA(cudaGetLastError());

  // Zero rows 10..29, columns 40..89.
  constexpr int kRow0 = 10, kRows = 20, kCol0 = 40, kCols = 50;
  CHECK_CUDA(cudaMemset2D(reinterpret_cast<char*>(device) + kRow0 * pitch + kCol0 * sizeof(float),
                          pitch, 0, kCols * sizeof(float), kRows));

  constexpr int kHostPitchFloats = kWidth + 7;
  constexpr float kPadding = -12345.0f;
  std::vector<float> out(kHostPitchFloats * kHeight, kPadding);
  CHECK_CUDA(cudaMemcpy2D(out.data(), kHostPitchFloats * sizeof(float), device, pitch, row_bytes,
                          kHeight, cudaMemcpyDeviceToHost));
  for (int row = 0; row < kHeight; ++row) {
    for (int col = 0; col < kHostPitchFloats; ++col) {
      float expected = kPadding;
      if (col < kWidth) {
        const bool zeroed = row >= kRow0 && row < kRow0 + kRows && col >= kCol0 &&
                            col < kCol0 + kCols;
        expected = zeroed ? 0.0f : packed[row * kWidth + col] * 2.0f + static_cast<float>(row);
      }
      const float got = out[row * kHostPitchFloats + col];
      if (got != expected)
        return fail("pitched_2d", "element (%d, %d) = %f, expected %f", row, col, got, expected);
    }
  }
  CHECK_CUDA(cudaFree(device));
  return pass("pitched_2d");
}
