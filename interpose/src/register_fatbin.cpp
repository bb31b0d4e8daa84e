// Registration of fatbins, kernels and variables (nvcc's start-up code), recorded locally, and the
// upload of a fatbin to the session on its first use.
//
// Wire (method __cudaRegisterFatBinary, see launch_kernel.cpp for the whole mapping):
//   args    {u64 FNV-1a hash of the image, u64 image bytes, u64 offset of this chunk}
//   payload the chunk [offset, offset + n), inline; chunks go in order, all but the last batched
//   results (last chunk only) {u64 module id}
// Before the chunks, one sync query: args {hash, bytes, offset = bytes}, no payload; results {u64
// module id}, 0 when the node's fatbin cache does not have the image (then the chunks follow).
#include <cuda_runtime_api.h>

#include <fmt/format.h>

#include <algorithm>

#include "client.hpp"
#include "flyt/api/codec.hpp"
#include "flyt/api/fatbin.hpp"
#include "flyt/transport/log.hpp"
#include "registry.hpp"

#define FLYT_CUDART_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose {
namespace {

spdlog::logger& log() { return flyt::logger("interpose"); }

std::vector<std::byte> chunkArgs(std::uint64_t hash, std::uint64_t total, std::uint64_t offset) {
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(hash);
  writer.put(total);
  writer.put(offset);
  return args;
}

}  // namespace

Registry& registry() noexcept {
  static Registry* const instance = new Registry();
  return *instance;
}

cudaError_t loadedModule(FatbinRecord& fatbin, std::uint64_t* moduleId) noexcept {
  if (fatbin.moduleId != 0) {
    *moduleId = fatbin.moduleId;
    return cudaSuccess;
  }
  if (fatbin.image.empty()) {
    log().error("cannot launch from a malformed fatbin: {}", fatbin.problem);
    return cudaErrorInvalidKernelImage;
  }
  auto& client = Client::get();
  const std::size_t chunk = std::max<std::size_t>(client.maxPayloadBytes(), 8192) - 4096;
  const std::uint64_t hash = api::fatbinHash(fatbin.image);
  const std::size_t total = fatbin.image.size();
  {
    auto outcome = client.call(api::Method::__cudaRegisterFatBinary, chunkArgs(hash, total, total));
    if (outcome.error != cudaSuccess) return outcome.error;
    api::ArgReader reader(outcome.results);
    std::uint64_t id = 0;
    if (!reader.get(id) || !reader.exhausted()) return cudaErrorUnknown;
    if (id != 0) {
      log().debug("fatbin {:016x} ({} bytes) is module {} of the session, from the node's cache", hash, total, id);
      fatbin.moduleId = id;
      *moduleId = id;
      return cudaSuccess;
    }
  }
  for (std::size_t done = 0;;) {
    const std::size_t n = std::min(chunk, total - done);
    const auto args = chunkArgs(hash, total, done);
    const auto payload = fatbin.image.subspan(done, n);
    done += n;
    if (done < total) {
      if (auto queued = client.enqueue(api::Method::__cudaRegisterFatBinary, args, payload); queued != cudaSuccess) {
        return queued;
      }
      continue;
    }
    auto outcome = client.call(api::Method::__cudaRegisterFatBinary, args, payload);
    if (outcome.error != cudaSuccess) return outcome.error;
    api::ArgReader reader(outcome.results);
    std::uint64_t id = 0;
    if (!reader.get(id) || !reader.exhausted() || id == 0) return cudaErrorUnknown;
    log().debug("fatbin {:016x} ({} bytes) is module {} of the session", hash, total, id);
    fatbin.moduleId = id;
    *moduleId = id;
    return cudaSuccess;
  }
}

}  // namespace flyt::interpose

using flyt::interpose::registry;

FLYT_CUDART_EXPORT void** __cudaRegisterFatBinary(void* fatCubin) {
  auto record = std::make_unique<flyt::interpose::FatbinRecord>();
  if (auto image = flyt::api::fatbinImage(fatCubin)) {
    record->image = *image;
  } else {
    record->problem = flyt::api::describe(image.error());
    flyt::logger("interpose").error("__cudaRegisterFatBinary({}): {}; its kernels will not launch",
                                    fmt::ptr(fatCubin), record->problem);
  }
  auto& reg = registry();
  std::lock_guard lock(reg.mutex);
  void** handle = &record->self;
  reg.fatbins.emplace(handle, std::move(record));
  return handle;
}

FLYT_CUDART_EXPORT void __cudaRegisterFatBinaryEnd(void** /*fatCubinHandle*/) {}

// Forgets the fatbin and everything registered from it. No message: at exit the session is closing
// anyway (TODO: unload the module on the worker at dlclose of a library with kernels).
FLYT_CUDART_EXPORT void __cudaUnregisterFatBinary(void** fatCubinHandle) {
  auto& reg = registry();
  std::lock_guard lock(reg.mutex);
  auto it = reg.fatbins.find(fatCubinHandle);
  if (it == reg.fatbins.end()) return;
  const auto* fatbin = it->second.get();
  std::erase_if(reg.functions, [&](const auto& entry) { return entry.second.fatbin == fatbin; });
  std::erase_if(reg.variables, [&](const auto& entry) { return entry.second.fatbin == fatbin; });
  reg.fatbins.erase(it);
}

FLYT_CUDART_EXPORT void __cudaRegisterFunction(void** fatCubinHandle, const char* hostFun,
                                               char* /*deviceFun*/, const char* deviceName,
                                               int /*thread_limit*/, uint3* /*tid*/, uint3* /*bid*/,
                                               dim3* /*bDim*/, dim3* /*gDim*/, int* /*wSize*/) {
  auto& reg = registry();
  std::lock_guard lock(reg.mutex);
  auto it = reg.fatbins.find(fatCubinHandle);
  if (it == reg.fatbins.end() || hostFun == nullptr || deviceName == nullptr) {
    flyt::logger("interpose").error("__cudaRegisterFunction with an unknown fatbin handle or no name");
    return;
  }
  flyt::interpose::FunctionRecord record;
  record.fatbin = it->second.get();
  record.deviceName = deviceName;
  reg.functions.insert_or_assign(static_cast<const void*>(hostFun), std::move(record));
}

FLYT_CUDART_EXPORT void __cudaRegisterVar(void** fatCubinHandle, char* hostVar, char* /*deviceAddress*/,
                                          const char* deviceName, int /*ext*/, size_t size, int constant,
                                          int /*global*/) {
  auto& reg = registry();
  std::lock_guard lock(reg.mutex);
  auto it = reg.fatbins.find(fatCubinHandle);
  if (it == reg.fatbins.end() || hostVar == nullptr || deviceName == nullptr) {
    flyt::logger("interpose").error("__cudaRegisterVar with an unknown fatbin handle or no name");
    return;
  }
  flyt::interpose::VarRecord record;
  record.fatbin = it->second.get();
  record.deviceName = deviceName;
  record.size = size;
  record.constant = constant != 0;
  reg.variables.insert_or_assign(static_cast<const void*>(hostVar), std::move(record));
}

// nvcc calls it only before host code touches a __managed__ variable; loading is lazy (first launch
// or symbol use), so there is nothing to do. TODO: __cudaRegisterManagedVar (still unsupported).
FLYT_CUDART_EXPORT char __cudaInitModule(void** /*fatCubinHandle*/) { return 1; }
