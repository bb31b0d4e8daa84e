// Kernel arguments arrive intact: templated kernels, instantiated for int, double and an aligned
// struct, take a struct by value, a char, a double, a value of the template type and a pointer,
// and write back what they received. A second kernel takes a 1 KiB struct by value and small
// integer types. The host compares every field with what it passed.
#include "gpu_check.cuh"

#include <cstring>

struct Params {
  int i;
  char c;
  double d;
  float f[5];
  long long ll;
  const void* p;
};

struct alignas(16) Vec4 {
  float x, y, z, w;
};

struct Big {
  int values[256];  // 1 KiB by value
};

template <typename T>
struct Received {
  Params params;
  char c;
  double d;
  T value;
  const T* pointer;
  T pointee;
};

template <typename T>
__global__ void echo(Params params, char c, double d, T value, const T* pointer, Received<T>* out) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    out->params = params;
    out->c = c;
    out->d = d;
    out->value = value;
    out->pointer = pointer;
    out->pointee = *pointer;
  }
}

__global__ void sum_big(Big big, short s, unsigned char u, bool flag, long long* out) {
  long long sum = 0;
  for (int i = 0; i < 256; ++i) sum += big.values[i];
  out[0] = sum;
  out[1] = s;
  out[2] = u;
  out[3] = flag ? 1 : 0;
}

bool same(int a, int b) { return a == b; }
bool same(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }  // bit for bit
bool same(const Vec4& a, const Vec4& b) {
  return a.x == b.x && a.y == b.y && a.z == b.z && a.w == b.w;
}

bool same(const Params& a, const Params& b) {
  return a.i == b.i && a.c == b.c && same(a.d, b.d) &&
         std::memcmp(a.f, b.f, sizeof a.f) == 0 && a.ll == b.ll && a.p == b.p;
}

// Launches echo<T> and returns an empty string when everything arrived, else what did not.
template <typename T>
const char* check_echo(const Params& params, char c, double d, T value, T pointee) {
  T* device_pointee = nullptr;
  Received<T>* device_out = nullptr;
  CHECK_CUDA(cudaMalloc(&device_pointee, sizeof(T)));
  CHECK_CUDA(cudaMalloc(&device_out, sizeof(Received<T>)));
  CHECK_CUDA(cudaMemcpy(device_pointee, &pointee, sizeof(T), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemset(device_out, 0, sizeof(Received<T>)));
  echo<T><<<1, 32>>>(params, c, d, value, device_pointee, device_out);
  CHECK_CUDA(cudaGetLastError());
  Received<T> got;
  CHECK_CUDA(cudaMemcpy(&got, device_out, sizeof got, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaFree(device_pointee));
  CHECK_CUDA(cudaFree(device_out));
  if (!same(got.params, params)) return "the struct";
  if (got.c != c) return "the char";
  if (!same(got.d, d)) return "the double";
  if (!same(got.value, value)) return "the template-typed value";
  if (got.pointer != device_pointee) return "the pointer";
  if (!same(got.pointee, pointee)) return "the value behind the pointer";
  return "";
}

int main() {
  require_cuda_device();
  Params params{};
  params.i = -123456;
  params.c = 'q';
  params.d = 3.141592653589793;
  for (int i = 0; i < 5; ++i) params.f[i] = 0.1f * static_cast<float>(i + 1);
  params.ll = 0x1234567890abcdefLL;
  params.p = reinterpret_cast<const void*>(0xdeadbeef00ull);

  if (const char* bad = check_echo<int>(params, 'A', -2.5e-300, -7, 424242); *bad)
    return fail("templated_kernels", "echo<int>: %s did not arrive intact", bad);
  if (const char* bad = check_echo<double>(params, '\x7f', 1.0 / 3.0, 6.02214076e23, -0.0); *bad)
    return fail("templated_kernels", "echo<double>: %s did not arrive intact", bad);
  if (const char* bad = check_echo<Vec4>(params, '\0', 2.0, Vec4{1.5f, -2.5f, 3.25f, 1e30f},
                                         Vec4{-1.0f, 0.0f, 7.0f, 8.0f});
      *bad)
    return fail("templated_kernels", "echo<Vec4>: %s did not arrive intact", bad);

  Big big{};
  long long expected_sum = 0;
  for (int i = 0; i < 256; ++i) {
    big.values[i] = i * i - 1000;
    expected_sum += big.values[i];
  }
  long long* device_out = nullptr;
  CHECK_CUDA(cudaMalloc(&device_out, 4 * sizeof(long long)));
  sum_big<<<1, 1>>>(big, static_cast<short>(-31000), static_cast<unsigned char>(250), true,
                    device_out);
  CHECK_CUDA(cudaGetLastError());
  long long got[4] = {};
  CHECK_CUDA(cudaMemcpy(got, device_out, sizeof got, cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaFree(device_out));
  if (got[0] != expected_sum)
    return fail("templated_kernels", "sum of the 1 KiB struct = %lld, expected %lld", got[0],
                expected_sum);
  if (got[1] != -31000 || got[2] != 250 || got[3] != 1)
    return fail("templated_kernels", "short/unsigned char/bool arrived as %lld/%lld/%lld", got[1],
                got[2], got[3]);
  return pass("templated_kernels");
}
