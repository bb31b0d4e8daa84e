// cuBLAS and cuBLASLt as an application uses them: SGEMM (cublasSgemm), a bf16 GEMM with fp32
// accumulation (cublasGemmEx) and a cuBLASLt matmul with a bias epilogue, each against the CPU.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <cmath>
#include <vector>

#include "library_check.cuh"

#define CHECK_BLAS(call) CHECK_LIBRARY(call, CUBLAS_STATUS_SUCCESS, cublasGetStatusName)

int main() {
  require_cuda_device();
  constexpr int m = 256, n = 192, k = 320;  // column-major, C = A (m x k) * B (k x n)
  std::vector<float> a(m * k), b(k * n), c(m * n), bias(m), want(m * n);
  for (int i = 0; i < m * k; ++i) a[i] = static_cast<float>((i * 7) % 17) / 17.0f - 0.5f;
  for (int i = 0; i < k * n; ++i) b[i] = static_cast<float>((i * 5) % 13) / 13.0f - 0.5f;
  for (int i = 0; i < m; ++i) bias[i] = static_cast<float>(i % 7) * 0.25f;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      double sum = 0;
      for (int p = 0; p < k; ++p) sum += static_cast<double>(a[i + p * m]) * b[p + j * k];
      want[i + j * m] = static_cast<float>(sum);
    }
  float *da, *db, *dc, *dbias;
  CHECK_CUDA(cudaMalloc(&da, a.size() * 4));
  CHECK_CUDA(cudaMalloc(&db, b.size() * 4));
  CHECK_CUDA(cudaMalloc(&dc, c.size() * 4));
  CHECK_CUDA(cudaMalloc(&dbias, bias.size() * 4));
  CHECK_CUDA(cudaMemcpy(da, a.data(), a.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(db, b.data(), b.size() * 4, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(dbias, bias.data(), bias.size() * 4, cudaMemcpyHostToDevice));

  cublasHandle_t handle;
  CHECK_BLAS(cublasCreate(&handle));
  const float one = 1.0f, zero = 0.0f;
  CHECK_BLAS(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, da, m, db, k, &zero, dc, m));
  CHECK_CUDA(cudaMemcpy(c.data(), dc, c.size() * 4, cudaMemcpyDeviceToHost));
  for (int i = 0; i < m * n; ++i) {
    if (std::fabs(c[i] - want[i]) > 1e-3f) return fail("blas", "sgemm c[%d] = %f, expected %f", i, c[i], want[i]);
  }

  // bf16 inputs, fp32 output and accumulation.
  std::vector<__nv_bfloat16> a16(a.size()), b16(b.size());
  for (size_t i = 0; i < a.size(); ++i) a16[i] = __float2bfloat16(a[i]);
  for (size_t i = 0; i < b.size(); ++i) b16[i] = __float2bfloat16(b[i]);
  __nv_bfloat16 *da16, *db16;
  CHECK_CUDA(cudaMalloc(&da16, a16.size() * 2));
  CHECK_CUDA(cudaMalloc(&db16, b16.size() * 2));
  CHECK_CUDA(cudaMemcpy(da16, a16.data(), a16.size() * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(db16, b16.data(), b16.size() * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemset(dc, 0, c.size() * 4));
  CHECK_BLAS(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, da16, CUDA_R_16BF, m, db16, CUDA_R_16BF, k,
                          &zero, dc, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  CHECK_CUDA(cudaMemcpy(c.data(), dc, c.size() * 4, cudaMemcpyDeviceToHost));
  for (int i = 0; i < m * n; ++i) {
    if (std::fabs(c[i] - want[i]) > 0.1f) return fail("blas", "bf16 gemm c[%d] = %f, expected %f", i, c[i], want[i]);
  }

  // cuBLASLt: D = A * B + bias (per row), fp32.
  cublasLtHandle_t lt;
  CHECK_BLAS(cublasLtCreate(&lt));
  cublasLtMatmulDesc_t op;
  CHECK_BLAS(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
  CHECK_BLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
  CHECK_BLAS(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &dbias, sizeof dbias));
  cublasLtMatrixLayout_t la, lb, lc;
  CHECK_BLAS(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, m, k, m));
  CHECK_BLAS(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, k, n, k));
  CHECK_BLAS(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, m));
  void* workspace;
  const size_t workspaceBytes = 8 << 20;
  CHECK_CUDA(cudaMalloc(&workspace, workspaceBytes));
  cublasLtMatmulPreference_t preference;
  CHECK_BLAS(cublasLtMatmulPreferenceCreate(&preference));
  CHECK_BLAS(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &workspaceBytes, sizeof workspaceBytes));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  CHECK_BLAS(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, preference, 1, &heuristic, &found));
  if (found == 0) return fail("blas", "cublasLt found no algorithm");
  CHECK_CUDA(cudaMemset(dc, 0, c.size() * 4));
  CHECK_BLAS(cublasLtMatmul(lt, op, &one, da, la, db, lb, &zero, dc, lc, dc, lc, &heuristic.algo, workspace,
                            workspaceBytes, 0));
  CHECK_CUDA(cudaMemcpy(c.data(), dc, c.size() * 4, cudaMemcpyDeviceToHost));
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      const float expected = want[i + j * m] + bias[i];
      if (std::fabs(c[i + j * m] - expected) > 1e-2f) {
        return fail("blas", "cublasLt d[%d,%d] = %f, expected %f", i, j, c[i + j * m], expected);
      }
    }
  cublasLtMatmulPreferenceDestroy(preference);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatmulDescDestroy(op);
  cublasLtDestroy(lt);
  CHECK_BLAS(cublasDestroy(handle));
  return pass("blas");
}
