// cuSPARSE's generic API: y = A x with A a tridiagonal 10000 x 10000 matrix in CSR form
// (cusparseSpMV), against the CPU.
#include <cusparse.h>

#include <cmath>
#include <vector>

#include "library_check.cuh"

#define CHECK_SPARSE(call) CHECK_LIBRARY(call, CUSPARSE_STATUS_SUCCESS, cusparseGetErrorString)

int main() {
  require_cuda_device();
  constexpr int n = 10000;
  std::vector<int> rows{0}, cols;
  std::vector<float> values, x(n), want(n, 0.0f);
  for (int i = 0; i < n; ++i) {
    for (int j = i - 1; j <= i + 1; ++j) {
      if (j < 0 || j >= n) continue;
      cols.push_back(j);
      values.push_back(j == i ? 4.0f : -1.0f - 0.001f * (i % 10));
    }
    rows.push_back(static_cast<int>(cols.size()));
    x[i] = std::sin(i * 0.01f);
  }
  for (int i = 0; i < n; ++i)
    for (int p = rows[i]; p < rows[i + 1]; ++p) want[i] += values[p] * x[cols[p]];
  int *drows, *dcols;
  float *dvalues, *dx, *dy;
  CHECK_CUDA(cudaMalloc(&drows, rows.size() * 4));
  CHECK_CUDA(cudaMalloc(&dcols, cols.size() * 4));
  CHECK_CUDA(cudaMalloc(&dvalues, values.size() * 4));
  CHECK_CUDA(cudaMalloc(&dx, n * 4));
  CHECK_CUDA(cudaMalloc(&dy, n * 4));
  CHECK_CUDA(cudaMemcpy(drows, rows.data(), rows.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dcols, cols.data(), cols.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dvalues, values.data(), values.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dx, x.data(), n * 4, cudaMemcpyHostToDevice));
  cusparseHandle_t handle;
  CHECK_SPARSE(cusparseCreate(&handle));
  cusparseSpMatDescr_t a;
  cusparseDnVecDescr_t vx, vy;
  CHECK_SPARSE(cusparseCreateCsr(&a, n, n, static_cast<int64_t>(values.size()), drows, dcols, dvalues,
                                 CUSPARSE_INDEX_32I, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO, CUDA_R_32F));
  CHECK_SPARSE(cusparseCreateDnVec(&vx, n, dx, CUDA_R_32F));
  CHECK_SPARSE(cusparseCreateDnVec(&vy, n, dy, CUDA_R_32F));
  const float one = 1.0f, zero = 0.0f;
  size_t bytes = 0;
  CHECK_SPARSE(cusparseSpMV_bufferSize(handle, CUSPARSE_OPERATION_NON_TRANSPOSE, &one, a, vx, &zero, vy, CUDA_R_32F,
                                       CUSPARSE_SPMV_ALG_DEFAULT, &bytes));
  void* buffer = nullptr;
  CHECK_CUDA(cudaMalloc(&buffer, bytes > 0 ? bytes : 1));
  CHECK_SPARSE(cusparseSpMV(handle, CUSPARSE_OPERATION_NON_TRANSPOSE, &one, a, vx, &zero, vy, CUDA_R_32F,
                            CUSPARSE_SPMV_ALG_DEFAULT, buffer));
  std::vector<float> got(n);
  CHECK_CUDA(cudaMemcpy(got.data(), dy, n * 4, cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; ++i) {
    if (std::fabs(got[i] - want[i]) > 1e-5f) return fail("sparse", "y[%d] = %f, expected %f", i, got[i], want[i]);
  }
  cusparseDestroySpMat(a);
  cusparseDestroyDnVec(vx);
  cusparseDestroyDnVec(vy);
  CHECK_SPARSE(cusparseDestroy(handle));
  return pass("sparse");
}
