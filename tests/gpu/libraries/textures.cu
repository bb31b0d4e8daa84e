// Arrays, texture and surface objects: a 2D float array filled with cudaMemcpy2DToArray, read by a
// kernel through a texture object (point sampling, clamped coordinates, and linear filtering
// between two texels), and written through a surface object and read back.
#include <cmath>
#include <vector>

#include "../gpu_check.cuh"

__global__ void fetch(cudaTextureObject_t texture, float* out, int width, int height) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  if (x < width + 2 && y < height) out[y * (width + 2) + x] = tex2D<float>(texture, x - 1 + 0.5f, y + 0.5f);
}

__global__ void halfway(cudaTextureObject_t texture, float* out) { *out = tex2D<float>(texture, 1.0f, 0.5f); }

__global__ void store(cudaSurfaceObject_t surface, int width, int height) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;
  if (x < width && y < height) surf2Dwrite(static_cast<float>(x * 1000 + y), surface, x * 4, y);
}

int main() {
  require_cuda_device();
  constexpr int width = 64, height = 32;
  std::vector<float> host(width * height);
  for (int i = 0; i < width * height; ++i) host[i] = static_cast<float>(i);
  cudaChannelFormatDesc format = cudaCreateChannelDesc<float>();
  cudaArray_t array;
  CHECK_CUDA(cudaMallocArray(&array, &format, width, height, cudaArraySurfaceLoadStore));
  CHECK_CUDA(cudaMemcpy2DToArray(array, 0, 0, host.data(), width * 4, width * 4, height, cudaMemcpyHostToDevice));
  cudaResourceDesc resource{};
  resource.resType = cudaResourceTypeArray;
  resource.res.array.array = array;
  cudaTextureDesc desc{};
  desc.addressMode[0] = desc.addressMode[1] = cudaAddressModeClamp;
  desc.filterMode = cudaFilterModePoint;
  desc.readMode = cudaReadModeElementType;
  cudaTextureObject_t texture;
  CHECK_CUDA(cudaCreateTextureObject(&texture, &resource, &desc, nullptr));
  float* out;
  CHECK_CUDA(cudaMalloc(&out, (width + 2) * height * 4));
  fetch<<<dim3(1, height), width + 2>>>(texture, out, width, height);
  CHECK_CUDA(cudaGetLastError());
  std::vector<float> got((width + 2) * height);
  CHECK_CUDA(cudaMemcpy(got.data(), out, got.size() * 4, cudaMemcpyDeviceToHost));
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width + 2; ++x) {
      const int clamped = x - 1 < 0 ? 0 : (x - 1 >= width ? width - 1 : x - 1);
      if (got[y * (width + 2) + x] != host[y * width + clamped]) {
        return fail("textures", "texel (%d, %d) = %f, expected %f", x - 1, y, got[y * (width + 2) + x], host[y * width + clamped]);
      }
    }
  CHECK_CUDA(cudaDestroyTextureObject(texture));

  desc.filterMode = cudaFilterModeLinear;
  CHECK_CUDA(cudaCreateTextureObject(&texture, &resource, &desc, nullptr));
  halfway<<<1, 1>>>(texture, out);
  float mid = 0;
  CHECK_CUDA(cudaMemcpy(&mid, out, 4, cudaMemcpyDeviceToHost));
  if (std::fabs(mid - 0.5f) > 1e-2f) return fail("textures", "linear filtering between texels 0 and 1: %f", mid);
  CHECK_CUDA(cudaDestroyTextureObject(texture));

  cudaSurfaceObject_t surface;
  CHECK_CUDA(cudaCreateSurfaceObject(&surface, &resource));
  store<<<dim3(1, height), width>>>(surface, width, height);
  CHECK_CUDA(cudaGetLastError());
  std::vector<float> back(width * height);
  CHECK_CUDA(cudaMemcpy2DFromArray(back.data(), width * 4, array, 0, 0, width * 4, height, cudaMemcpyDeviceToHost));
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      if (back[y * width + x] != static_cast<float>(x * 1000 + y)) {
        return fail("textures", "surface (%d, %d) = %f", x, y, back[y * width + x]);
      }
    }
  CHECK_CUDA(cudaDestroySurfaceObject(surface));
  CHECK_CUDA(cudaFreeArray(array));
  CHECK_CUDA(cudaFree(out));
  return pass("textures");
}
