// Kernels with known parameter layouts, compiled by nvcc into fatbins that cubin_layout_test reads.
struct S12 {  // 12 bytes, 4-aligned
  int a;
  float b;
  char c;
};
struct Big {  // 1 KiB, 1-aligned
  char bytes[1024];
};
struct Huge {  // a parameter block above what nvcc describes parameter by parameter
  char bytes[4400];
};

__global__ void kint(int x, int* out) { *out = x; }
__global__ void kchar(char c, double d, int* out) { *out = c + static_cast<int>(d); }
__global__ void ks12(S12 s, char c, int* out) { *out = s.a + c; }
__global__ void kbig(Big b, char c, double* out) { *out = b.bytes[3] + c; }
__global__ void knone() {}
__global__ void kunused(int, long long, short, int*) {}
__global__ void khuge(Huge h, int* out) { *out = h.bytes[7]; }
