// __constant__ and __device__ variables through the symbol API: cudaMemcpyToSymbol (whole and at
// an offset), a kernel that reads the constants and writes device variables, cudaMemcpyFromSymbol,
// cudaGetSymbolAddress (read back with a plain cudaMemcpy) and cudaGetSymbolSize.
#include "gpu_check.cuh"

constexpr int kCoefficients = 16;
constexpr int kTable = 64;

__constant__ float coefficients[kCoefficients];
__constant__ int offset_constant;
__device__ int table[kTable];
__device__ unsigned int counter;

__global__ void use_symbols(float* out) {
  const int i = threadIdx.x;
  table[i] = static_cast<int>(coefficients[i % kCoefficients]) * 10 + offset_constant + i;
  out[i] = coefficients[i % kCoefficients] * 0.5f;
  atomicAdd(&counter, 1u);
}

int main() {
  require_cuda_device();
  float coeffs[kCoefficients];
  for (int i = 0; i < kCoefficients; ++i) coeffs[i] = static_cast<float>(i + 1);
  // The first half in one call, the second half at a byte offset.
  CHECK_CUDA(cudaMemcpyToSymbol(coefficients, coeffs, sizeof(float) * kCoefficients / 2));
  CHECK_CUDA(cudaMemcpyToSymbol(coefficients, coeffs + kCoefficients / 2,
                                sizeof(float) * kCoefficients / 2, sizeof(float) * kCoefficients / 2,
                                cudaMemcpyHostToDevice));
  const int offset_value = 1000;
  CHECK_CUDA(cudaMemcpyToSymbol(offset_constant, &offset_value, sizeof offset_value));
  const unsigned int zero = 0;
  CHECK_CUDA(cudaMemcpyToSymbol(counter, &zero, sizeof zero));

  float* out = nullptr;
  CHECK_CUDA(cudaMalloc(&out, kTable * sizeof(float)));
  use_symbols<<<1, kTable>>>(out);
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaDeviceSynchronize());

  float coeffs_back[kCoefficients] = {};
  CHECK_CUDA(cudaMemcpyFromSymbol(coeffs_back, coefficients, sizeof coeffs_back));
  for (int i = 0; i < kCoefficients; ++i)
    if (coeffs_back[i] != coeffs[i])
      return fail("constant_memory", "coefficients[%d] read back %f, expected %f", i,
                  coeffs_back[i], coeffs[i]);

  unsigned int count = 0;
  CHECK_CUDA(cudaMemcpyFromSymbol(&count, counter, sizeof count));
  if (count != kTable) return fail("constant_memory", "counter = %u, expected %d", count, kTable);

  int table_back[kTable] = {};
  CHECK_CUDA(cudaMemcpyFromSymbol(table_back, table, sizeof table_back));
  int upper_half[kTable / 2] = {};  // the same variable, read from a byte offset
  CHECK_CUDA(cudaMemcpyFromSymbol(upper_half, table, sizeof upper_half, sizeof upper_half,
                                  cudaMemcpyDeviceToHost));
  float out_back[kTable] = {};
  CHECK_CUDA(cudaMemcpy(out_back, out, sizeof out_back, cudaMemcpyDeviceToHost));
  for (int i = 0; i < kTable; ++i) {
    const int expected = static_cast<int>(coeffs[i % kCoefficients]) * 10 + offset_value + i;
    if (table_back[i] != expected)
      return fail("constant_memory", "table[%d] = %d, expected %d", i, table_back[i], expected);
    if (i >= kTable / 2 && upper_half[i - kTable / 2] != expected)
      return fail("constant_memory", "table[%d] read at an offset = %d, expected %d", i,
                  upper_half[i - kTable / 2], expected);
    if (out_back[i] != coeffs[i % kCoefficients] * 0.5f)
      return fail("constant_memory", "out[%d] = %f, expected %f", i, out_back[i],
                  coeffs[i % kCoefficients] * 0.5f);
  }

  void* table_address = nullptr;
  size_t table_size = 0, coefficients_size = 0;
  CHECK_CUDA(cudaGetSymbolAddress(&table_address, table));
  CHECK_CUDA(cudaGetSymbolSize(&table_size, table));
  CHECK_CUDA(cudaGetSymbolSize(&coefficients_size, coefficients));
  if (table_address == nullptr) return fail("constant_memory", "cudaGetSymbolAddress gave null");
  if (table_size != sizeof(int) * kTable)
    return fail("constant_memory", "cudaGetSymbolSize(table) = %zu, expected %zu", table_size,
                sizeof(int) * kTable);
  if (coefficients_size != sizeof(float) * kCoefficients)
    return fail("constant_memory", "cudaGetSymbolSize(coefficients) = %zu, expected %zu",
                coefficients_size, sizeof(float) * kCoefficients);
  int through_address[kTable] = {};
  CHECK_CUDA(cudaMemcpy(through_address, table_address, sizeof through_address,
                        cudaMemcpyDeviceToHost));
  for (int i = 0; i < kTable; ++i)
    if (through_address[i] != table_back[i])
      return fail("constant_memory", "table[%d] through its address = %d, by symbol = %d", i,
                  through_address[i], table_back[i]);
  // Writing through the address is seen by the symbol API too.
  const int marker = -42;
  CHECK_CUDA(cudaMemcpy(static_cast<int*>(table_address) + 5, &marker, sizeof marker,
                        cudaMemcpyHostToDevice));
  int fifth = 0;
  CHECK_CUDA(cudaMemcpyFromSymbol(&fifth, table, sizeof fifth, 5 * sizeof(int)));
  if (fifth != marker)
    return fail("constant_memory", "table[5] = %d after writing %d through its address", fifth,
                marker);

  CHECK_CUDA(cudaFree(out));
  return pass("constant_memory");
}
