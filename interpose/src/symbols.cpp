// __device__ and __constant__ variables: cudaGetSymbolAddress, cudaGetSymbolSize and the symbol
// copies, by the host shadow address nvcc registered (__cudaRegisterVar).
//
// Wire (method cudaGetSymbolAddress, once per variable, then cached):
//   args    {u64 module id, u64 size registered by nvcc, name bytes (the rest)}
//   results {u64 device address, u64 size}
// The worker adds the variable to the session's allocations, so the copies are plain cudaMemcpy
// calls on (address + offset).
#include <cuda_runtime_api.h>

#include <cstring>

#include "client.hpp"
#include "flyt/api/codec.hpp"
#include "flyt/transport/log.hpp"
#include "registry.hpp"

#define FLYT_CUDART_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose {
namespace {

struct Symbol {
  std::byte* address = nullptr;
  std::size_t size = 0;
};

cudaError_t lookUp(VarRecord& variable) {
  std::uint64_t moduleId = 0;
  if (auto loaded = loadedModule(*variable.fatbin, &moduleId); loaded != cudaSuccess) return loaded;
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(moduleId);
  writer.put(static_cast<std::uint64_t>(variable.size));
  const auto* name = reinterpret_cast<const std::byte*>(variable.deviceName.data());
  args.insert(args.end(), name, name + variable.deviceName.size());
  auto outcome = Client::get().call(api::Method::cudaGetSymbolAddress, args);
  if (outcome.error != cudaSuccess) return outcome.error;
  api::ArgReader reader(outcome.results);
  std::uint64_t address = 0, size = 0;
  if (!reader.get(address) || !reader.get(size) || !reader.exhausted() || address == 0) return cudaErrorUnknown;
  if (size != variable.size) {
    flyt::logger("interpose").warn("variable {}: the worker's module says {} bytes, nvcc registered {}",
                                   variable.deviceName, size, variable.size);
  }
  variable.deviceAddress = address;
  return cudaSuccess;
}

cudaError_t resolve(const void* symbol, Symbol* out) {
  auto& reg = registry();
  std::lock_guard lock(reg.mutex);
  auto it = reg.variables.find(symbol);
  if (it == reg.variables.end()) return cudaErrorInvalidSymbol;
  auto& variable = it->second;
  if (variable.deviceAddress == 0) {
    if (auto found = lookUp(variable); found != cudaSuccess) return found;
  }
  out->address = reinterpret_cast<std::byte*>(static_cast<std::uintptr_t>(variable.deviceAddress));
  out->size = variable.size;
  return cudaSuccess;
}

// The device range [offset, offset + count) of a variable, checked against its size.
cudaError_t range(const void* symbol, std::size_t count, std::size_t offset, std::byte** device) {
  Symbol found;
  if (auto resolved = resolve(symbol, &found); resolved != cudaSuccess) return resolved;
  if (offset > found.size || count > found.size - offset) return cudaErrorInvalidValue;
  *device = found.address + offset;
  return cudaSuccess;
}

cudaError_t toSymbol(const void* symbol, const void* src, std::size_t count, std::size_t offset,
                     cudaMemcpyKind kind) {
  if (kind != cudaMemcpyHostToDevice && kind != cudaMemcpyDeviceToDevice) return cudaErrorInvalidMemcpyDirection;
  std::byte* device = nullptr;
  if (auto checked = range(symbol, count, offset, &device); checked != cudaSuccess) return checked;
  return count == 0 ? cudaSuccess : ::cudaMemcpy(device, src, count, kind);
}

cudaError_t fromSymbol(void* dst, const void* symbol, std::size_t count, std::size_t offset,
                       cudaMemcpyKind kind) {
  if (kind != cudaMemcpyDeviceToHost && kind != cudaMemcpyDeviceToDevice) return cudaErrorInvalidMemcpyDirection;
  std::byte* device = nullptr;
  if (auto checked = range(symbol, count, offset, &device); checked != cudaSuccess) return checked;
  return count == 0 ? cudaSuccess : ::cudaMemcpy(dst, device, count, kind);
}

}  // namespace
}  // namespace flyt::interpose

using namespace flyt::interpose;

FLYT_CUDART_EXPORT cudaError_t cudaGetSymbolAddress(void** devPtr, const void* symbol) {
  if (devPtr == nullptr) return recordResult(cudaErrorInvalidValue);
  Symbol found;
  if (auto resolved = resolve(symbol, &found); resolved != cudaSuccess) return recordResult(resolved);
  *devPtr = found.address;
  return cudaSuccess;
}

FLYT_CUDART_EXPORT cudaError_t cudaGetSymbolSize(size_t* size, const void* symbol) {
  if (size == nullptr) return recordResult(cudaErrorInvalidValue);
  auto& reg = registry();
  std::lock_guard lock(reg.mutex);
  auto it = reg.variables.find(symbol);
  if (it == reg.variables.end()) return recordResult(cudaErrorInvalidSymbol);
  *size = it->second.size;
  return cudaSuccess;
}

FLYT_CUDART_EXPORT cudaError_t cudaMemcpyToSymbol(const void* symbol, const void* src, size_t count,
                                                  size_t offset, enum cudaMemcpyKind kind) {
  return recordResult(toSymbol(symbol, src, count, offset, kind));
}

FLYT_CUDART_EXPORT cudaError_t cudaMemcpyFromSymbol(void* dst, const void* symbol, size_t count,
                                                    size_t offset, enum cudaMemcpyKind kind) {
  return recordResult(fromSymbol(dst, symbol, count, offset, kind));
}

// A synchronous copy is ordered the same way under both default streams.
FLYT_CUDART_EXPORT cudaError_t cudaMemcpyToSymbol_ptds(const void* symbol, const void* src, size_t count,
                                                       size_t offset, enum cudaMemcpyKind kind) {
  return cudaMemcpyToSymbol(symbol, src, count, offset, kind);
}

FLYT_CUDART_EXPORT cudaError_t cudaMemcpyFromSymbol_ptds(void* dst, const void* symbol, size_t count,
                                                         size_t offset, enum cudaMemcpyKind kind) {
  return cudaMemcpyFromSymbol(dst, symbol, count, offset, kind);
}

// TODO(perf): truly asynchronous once cudaMemcpyAsync is forwarded; until then the stream is drained
// and the copy is synchronous, which keeps the stream's order (and is stronger than asked).
FLYT_CUDART_EXPORT cudaError_t cudaMemcpyToSymbolAsync(const void* symbol, const void* src, size_t count,
                                                       size_t offset, enum cudaMemcpyKind kind,
                                                       cudaStream_t stream) {
  if (auto drained = ::cudaStreamSynchronize(stream); drained != cudaSuccess) return drained;
  return cudaMemcpyToSymbol(symbol, src, count, offset, kind);
}

FLYT_CUDART_EXPORT cudaError_t cudaMemcpyFromSymbolAsync(void* dst, const void* symbol, size_t count,
                                                         size_t offset, enum cudaMemcpyKind kind,
                                                         cudaStream_t stream) {
  if (auto drained = ::cudaStreamSynchronize(stream); drained != cudaSuccess) return drained;
  return cudaMemcpyFromSymbol(dst, symbol, count, offset, kind);
}

FLYT_CUDART_EXPORT cudaError_t cudaMemcpyToSymbolAsync_ptsz(const void* symbol, const void* src,
                                                            size_t count, size_t offset,
                                                            enum cudaMemcpyKind kind, cudaStream_t stream) {
  return cudaMemcpyToSymbolAsync(symbol, src, count, offset, kind, stream == nullptr ? cudaStreamPerThread : stream);
}

FLYT_CUDART_EXPORT cudaError_t cudaMemcpyFromSymbolAsync_ptsz(void* dst, const void* symbol, size_t count,
                                                              size_t offset, enum cudaMemcpyKind kind,
                                                              cudaStream_t stream) {
  return cudaMemcpyFromSymbolAsync(dst, symbol, count, offset, kind, stream == nullptr ? cudaStreamPerThread : stream);
}
