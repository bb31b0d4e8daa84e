// cuSOLVER: LU factorisation (getrf) and solve (getrs) of a diagonally dominant 128 x 128 system,
// and a symmetric eigenvalue problem (syevd) of a matrix with known eigenvalues.
#include <cusolverDn.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "library_check.cuh"

#define CHECK_SOLVER(call) CHECK_LIBRARY(call, CUSOLVER_STATUS_SUCCESS, statusNumber)

int main() {
  require_cuda_device();
  constexpr int n = 128;
  std::vector<double> a(n * n), x(n), b(n, 0.0);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < n; ++i) a[i + j * n] = i == j ? 2.0 * n : std::sin(i * 0.7 + j * 0.3);
  for (int i = 0; i < n; ++i) x[i] = 1.0 + i * 0.01;
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < n; ++i) b[i] += a[i + j * n] * x[j];
  cusolverDnHandle_t handle;
  CHECK_SOLVER(cusolverDnCreate(&handle));
  double *da, *db, *work;
  int *pivots, *info;
  CHECK_CUDA(cudaMalloc(&da, a.size() * 8));
  CHECK_CUDA(cudaMalloc(&db, b.size() * 8));
  CHECK_CUDA(cudaMalloc(&pivots, n * sizeof(int)));
  CHECK_CUDA(cudaMalloc(&info, sizeof(int)));
  CHECK_CUDA(cudaMemcpy(da, a.data(), a.size() * 8, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(db, b.data(), b.size() * 8, cudaMemcpyHostToDevice));
  int lwork = 0;
  CHECK_SOLVER(cusolverDnDgetrf_bufferSize(handle, n, n, da, n, &lwork));
  CHECK_CUDA(cudaMalloc(&work, std::max(lwork, 1) * sizeof(double)));
  CHECK_SOLVER(cusolverDnDgetrf(handle, n, n, da, n, work, pivots, info));
  CHECK_SOLVER(cusolverDnDgetrs(handle, CUBLAS_OP_N, n, 1, da, n, pivots, db, n, info));
  int status = -1;
  CHECK_CUDA(cudaMemcpy(&status, info, sizeof(int), cudaMemcpyDeviceToHost));
  if (status != 0) return fail("solver", "getrf/getrs info = %d", status);
  std::vector<double> got(n);
  CHECK_CUDA(cudaMemcpy(got.data(), db, n * 8, cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; ++i) {
    if (std::fabs(got[i] - x[i]) > 1e-9) return fail("solver", "x[%d] = %.12f, expected %.12f", i, got[i], x[i]);
  }
  CHECK_CUDA(cudaFree(work));

  // A symmetric matrix Q diag(1..n) Q^T with Q a Householder reflection: eigenvalues 1..n.
  std::vector<double> v(n), s(n * n);
  double norm = 0;
  for (int i = 0; i < n; ++i) norm += (v[i] = std::cos(i * 0.37) + 0.1) * v[i];
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < n; ++i) {
      double sum = 0;
      for (int p = 0; p < n; ++p) {
        const double qip = (i == p) - 2 * v[i] * v[p] / norm, qjp = (j == p) - 2 * v[j] * v[p] / norm;
        sum += qip * (p + 1) * qjp;
      }
      s[i + j * n] = sum;
    }
  double* dw;
  CHECK_CUDA(cudaMalloc(&dw, n * 8));
  CHECK_CUDA(cudaMemcpy(da, s.data(), s.size() * 8, cudaMemcpyHostToDevice));
  CHECK_SOLVER(cusolverDnDsyevd_bufferSize(handle, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER, n, da, n, dw, &lwork));
  CHECK_CUDA(cudaMalloc(&work, std::max(lwork, 1) * sizeof(double)));
  CHECK_SOLVER(cusolverDnDsyevd(handle, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER, n, da, n, dw, work, lwork, info));
  CHECK_CUDA(cudaMemcpy(&status, info, sizeof(int), cudaMemcpyDeviceToHost));
  if (status != 0) return fail("solver", "syevd info = %d", status);
  CHECK_CUDA(cudaMemcpy(got.data(), dw, n * 8, cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; ++i) {
    if (std::fabs(got[i] - (i + 1)) > 1e-8) return fail("solver", "eigenvalue %d = %.12f, expected %d", i, got[i], i + 1);
  }
  CHECK_SOLVER(cusolverDnDestroy(handle));
  return pass("solver");
}
