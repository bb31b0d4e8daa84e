// Kernel queries by host function: cudaFuncGetAttributes, cudaFuncSetAttribute,
// cudaOccupancyMaxActiveBlocksPerMultiprocessor[WithFlags]. The host stub (or the handle
// __cudaGetKernel gave out) is resolved to the session's kernel id as for a launch (the module is
// uploaded and the kernel looked up on first use, launch_kernel.cpp); the worker asks the runtime
// about its cudaKernel_t. Every call is sync and nothing is cached: cudaFuncSetAttribute changes
// the answers.
//
// Wire (each function's own method id):
//   cudaFuncGetAttributes   args {u64 kernel id}; results struct cudaFuncAttributes
//   cudaFuncSetAttribute    args {u64 kernel id, i32 attribute, i32 value}
//   cudaOccupancy...[WithFlags]  args {u64 kernel id, i32 blockSize, u64 dynamicSMemSize, u32 flags
//                           (0 for the plain one)}; results {i32 blocks}
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "client.hpp"
#include "flyt/api/codec.hpp"
#include "registry.hpp"

#define FLYT_CUDART_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose {
namespace {

// The call's arguments, starting with the kernel id of `func`.
cudaError_t argsFor(const void* func, std::vector<std::byte>& args) {
  std::uint64_t kernelId = 0;
  if (auto resolved = kernelIdOf(func, &kernelId); resolved != cudaSuccess) return resolved;
  api::ArgWriter(args).put(kernelId);
  return cudaSuccess;
}

cudaError_t occupancy(int* numBlocks, const void* func, int blockSize, std::size_t sharedMem, unsigned flags,
                      api::Method method) {
  if (numBlocks == nullptr) return recordResult(cudaErrorInvalidValue);
  std::vector<std::byte> args;
  if (auto built = argsFor(func, args); built != cudaSuccess) return recordResult(built);
  api::ArgWriter writer(args);
  writer.put(static_cast<std::int32_t>(blockSize));
  writer.put(static_cast<std::uint64_t>(sharedMem));
  writer.put(static_cast<std::uint32_t>(flags));
  auto outcome = Client::get().call(method, args);
  if (outcome.error != cudaSuccess) return recordResult(outcome.error);
  api::ArgReader reader(outcome.results);
  std::int32_t blocks = 0;
  if (!reader.get(blocks) || !reader.exhausted()) return recordResult(cudaErrorUnknown);
  *numBlocks = blocks;
  return cudaSuccess;
}

}  // namespace
}  // namespace flyt::interpose

using namespace flyt::interpose;

FLYT_CUDART_EXPORT cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes* attr, const void* func) {
  if (attr == nullptr) return recordResult(cudaErrorInvalidValue);
  std::vector<std::byte> args;
  if (auto built = argsFor(func, args); built != cudaSuccess) return recordResult(built);
  auto outcome = Client::get().call(flyt::api::Method::cudaFuncGetAttributes, args);
  if (outcome.error != cudaSuccess) return recordResult(outcome.error);
  flyt::api::ArgReader reader(outcome.results);
  if (!reader.get(*attr) || !reader.exhausted()) return recordResult(cudaErrorUnknown);
  return cudaSuccess;
}

FLYT_CUDART_EXPORT cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  std::vector<std::byte> args;
  if (auto built = argsFor(func, args); built != cudaSuccess) return recordResult(built);
  flyt::api::ArgWriter writer(args);
  writer.put(static_cast<std::int32_t>(attr));
  writer.put(static_cast<std::int32_t>(value));
  return recordResult(Client::get().call(flyt::api::Method::cudaFuncSetAttribute, args).error);
}

FLYT_CUDART_EXPORT cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* numBlocks, const void* func,
                                                                             int blockSize,
                                                                             size_t dynamicSMemSize) {
  return occupancy(numBlocks, func, blockSize, dynamicSMemSize, cudaOccupancyDefault,
                   flyt::api::Method::cudaOccupancyMaxActiveBlocksPerMultiprocessor);
}

FLYT_CUDART_EXPORT cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* numBlocks,
                                                                                      const void* func,
                                                                                      int blockSize,
                                                                                      size_t dynamicSMemSize,
                                                                                      unsigned int flags) {
  return occupancy(numBlocks, func, blockSize, dynamicSMemSize, flags,
                   flyt::api::Method::cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags);
}
