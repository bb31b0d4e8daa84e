// Modules, libraries, functions and kernels.
//
// An image (a fatbin, a cubin ELF or PTX text; its size is read from the image itself) is uploaded
// once per session under its 64-bit FNV-1a hash (flytUploadImage chunks, batched) and then loaded
// by hash: a second load of the same image sends no bytes. A function's or kernel's parameter
// layout comes back with its lookup, so launches need no query (launch.cpp).
//
// Wire: flytUploadImage {u64 hash, u64 total, u64 offset} + payload chunk;
// cuModuleLoadData / cuLibraryLoadData {u64 hash, u64 bytes} -> {u64 module | library};
// cuModuleGetFunction {u64 module, string name} / cuLibraryGetKernel {u64 library, string name}
// -> {u64 handle, layout}; cuModuleEnumerateFunctions {u64 module, u32 count} -> {u32 count,
// count x {u64 function, string name, layout}}; cuKernelGetFunction {u64 kernel} -> {u64 function}; where a layout is
// {u32 count, u32 bytes, count x {u32 offset, u32 size}} and count = kUnknownLayout when the
// worker's driver cannot say (launches then need `extra`).
#include <cuda.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <tuple>

#include "driver_client.hpp"
#include "driver_internal.hpp"
#include "flyt/api/fatbin.hpp"
#include "flyt/transport/log.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {
namespace {

constexpr std::uint32_t kUnknownLayout = 0xffffffffU;
// An ELF image longer than this, or PTX text, is refused as implausible.
constexpr std::uint64_t kMaxImageBytes = api::kMaxFatbinBytes;

// The length of an ELF64 image: the end of its section or program header table, whichever is last
// (sections' contents precede nvcc's section table).
std::size_t elfBytes(const unsigned char* image) noexcept {
  if (image[4] != 2 /* ELFCLASS64 */ || image[5] != 1 /* little-endian */) return 0;
  std::uint64_t phoff, shoff;
  std::uint16_t phentsize, phnum, shentsize, shnum;
  std::memcpy(&phoff, image + 0x20, 8);
  std::memcpy(&shoff, image + 0x28, 8);
  std::memcpy(&phentsize, image + 0x36, 2);
  std::memcpy(&phnum, image + 0x38, 2);
  std::memcpy(&shentsize, image + 0x3a, 2);
  std::memcpy(&shnum, image + 0x3c, 2);
  const std::uint64_t end = std::max(phoff + std::uint64_t{phentsize} * phnum, shoff + std::uint64_t{shentsize} * shnum);
  return end > kMaxImageBytes ? 0 : static_cast<std::size_t>(end);
}

// The image's bytes; empty when it is none of the three forms. NVIDIA's runtime passes the fatbin
// wrapper nvcc emits ({magic 0x466243B1, version, fatbin, ...}), which the driver also takes: the
// fatbin it points at is what travels.
std::span<const std::byte> imageBytes(const void* image) noexcept {
  if (auto wrapped = api::fatbinImage(image)) return *wrapped;
  const auto* bytes = static_cast<const unsigned char*>(image);
  std::size_t size = 0;
  if (auto fatbin = api::fatbinImageBytes(image)) {
    size = *fatbin;
  } else if (std::memcmp(bytes, "\x7f" "ELF", 4) == 0) {
    size = elfBytes(bytes);
  } else {
    size = strnlen(static_cast<const char*>(image), kMaxImageBytes) + 1;  // PTX, with its NUL
    if (size > kMaxImageBytes) size = 0;
  }
  return {static_cast<const std::byte*>(image), size};
}

struct Uploaded {
  std::mutex mutex;
  std::set<std::uint64_t> hashes;
};
Uploaded& uploaded() noexcept {
  static auto* const state = new Uploaded;  // leaked: modules may be loaded from static constructors
  return *state;
}

// Uploads the image unless the worker has it; returns its hash.
CUresult upload(DriverCall& call, std::span<const std::byte> image, std::uint64_t& hash) noexcept {
  hash = api::fatbinHash(image);
  {
    std::lock_guard lock(uploaded().mutex);
    if (uploaded().hashes.contains(hash)) return CUDA_SUCCESS;
  }
  const std::size_t chunk = call.session().maxPayloadBytes();
  if (chunk == 0) return CUDA_ERROR_DEVICE_UNAVAILABLE;
  for (std::size_t offset = 0; offset < image.size(); offset += chunk) {
    std::vector<std::byte> args;
    api::ArgWriter writer(args);
    writer.put(hash);
    writer.put(static_cast<std::uint64_t>(image.size()));
    writer.put(static_cast<std::uint64_t>(offset));
    if (CUresult error = call.enqueue(Method::flytUploadImage, args, image.subspan(offset, std::min(chunk, image.size() - offset)));
        error != CUDA_SUCCESS) {
      return error;
    }
  }
  return CUDA_SUCCESS;
}

void rememberUpload(std::uint64_t hash) noexcept {
  std::lock_guard lock(uploaded().mutex);
  uploaded().hashes.insert(hash);
}

// Uploads and loads the image with `method` (cuModuleLoadData or cuLibraryLoadData).
CUresult load(Method method, const void* image, std::uint64_t& handle) noexcept {
  if (image == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  const auto bytes = imageBytes(image);
  if (bytes.empty()) return CUDA_ERROR_INVALID_IMAGE;
  DriverCall call;
  std::uint64_t hash = 0;
  if (CUresult error = upload(call, bytes, hash); error != CUDA_SUCCESS) return error;
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(hash);
  writer.put(static_cast<std::uint64_t>(bytes.size()));
  auto outcome = call.call(method, args);
  // The image arrived whole (the worker checked its hash) even if the driver refused it.
  if (outcome.error != CUDA_ERROR_DEVICE_UNAVAILABLE && outcome.error != CUDA_ERROR_INVALID_VALUE) rememberUpload(hash);
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  api::ArgReader reader(outcome.results);
  if (!reader.get(handle) || handle == 0) return CUDA_ERROR_UNKNOWN;
  return CUDA_SUCCESS;
}

CUresult readFile(const char* path, std::vector<char>& contents) noexcept {
  if (path == nullptr) return CUDA_ERROR_INVALID_VALUE;
  try {
    std::ifstream file(path, std::ios::binary);
    if (!file) return CUDA_ERROR_FILE_NOT_FOUND;
    contents.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
    contents.push_back('\0');  // PTX text needs its NUL
    return CUDA_SUCCESS;
  } catch (...) {
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
}

}  // namespace

// A function's or kernel's layout as the worker sends it, recorded for `handle`.
bool readLayout(api::ArgReader& reader, std::uint64_t handle) noexcept {
  std::uint32_t count = 0, bytes = 0;
  if (!reader.get(count) || !reader.get(bytes)) return false;
  if (count == kUnknownLayout) return true;
  ParamLayout layout;
  layout.bytes = bytes;
  for (std::uint32_t i = 0; i < count; ++i) {
    ParamLayout::Param param{};
    if (!reader.get(param.offset) || !reader.get(param.size)) return false;
    layout.params.push_back(param);
  }
  DriverState::get().setLayout(handle, std::move(layout));
  return true;
}

CUresult refreshLayout(std::uint64_t handle) noexcept {
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  std::vector<std::byte> args;
  api::ArgWriter(args).put(handle);
  auto outcome = DriverCall().call(Method::flytGetParamLayout, args);
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  api::ArgReader reader(outcome.results);
  return readLayout(reader, handle) ? CUDA_SUCCESS : CUDA_ERROR_UNKNOWN;
}

namespace {

// A lookup by name whose reply is {u64 handle, layout}.
// Lookups answered in the process after the first: a module's or library's function by name (the
// worker's ids are never reused, so an id stays the answer for as long as its owner lives), and a
// kernel's function in a context, until that context is reset, released or destroyed
// (DriverState::contextEpoch). The runtime asks before every launch of a library kernel.
struct Lookups {
  std::mutex mutex;
  std::map<std::tuple<Method, std::uint64_t, std::string>, std::uint64_t> byName;
  std::map<std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>, std::uint64_t> kernelFunctions;
  std::map<std::uint64_t, std::uint64_t> functionKernels;  // the other way (ids are never reused)
};
Lookups& lookups() noexcept {
  static auto* const state = new Lookups;  // leaked: lookups may come during exit
  return *state;
}

CUresult lookup(Method method, std::uint64_t owner, const char* name, std::uint64_t& handle) noexcept {
  if (name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  auto& known = lookups();
  {
    std::lock_guard lock(known.mutex);
    if (auto it = known.byName.find({method, owner, name}); it != known.byName.end()) {
      handle = it->second;
      return CUDA_SUCCESS;
    }
  }
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(owner);
  writer.putString(name);
  auto outcome = DriverCall().call(method, args);
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  api::ArgReader reader(outcome.results);
  if (!reader.get(handle) || handle == 0 || !readLayout(reader, handle)) return CUDA_ERROR_UNKNOWN;
  DriverState::get().setName(handle, name);
  std::lock_guard lock(known.mutex);
  known.byName.emplace(std::tuple{method, owner, std::string(name)}, handle);
  return CUDA_SUCCESS;
}

template <class Handle>
Handle handleOf(std::uint64_t id) noexcept {
  return reinterpret_cast<Handle>(static_cast<std::uintptr_t>(id));
}

CUresult paramInfo(std::uint64_t handle, std::size_t index, std::size_t* offset, std::size_t* size) noexcept {
  const auto layout = DriverState::get().layout(handle);
  if (!layout) return CUDA_ERROR_NOT_SUPPORTED;
  if (index >= layout->params.size()) return CUDA_ERROR_INVALID_VALUE;
  if (offset != nullptr) *offset = layout->params[index].offset;
  if (size != nullptr) *size = layout->params[index].size;
  return CUDA_SUCCESS;
}

CUresult nameOf(std::uint64_t handle, const char** name) noexcept {
  if (name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *name = DriverState::get().name(handle);
  return *name == nullptr ? CUDA_ERROR_INVALID_HANDLE : CUDA_SUCCESS;
}

}  // namespace

CUresult loadModuleImage(CUmodule* module, const void* image) noexcept {
  if (module == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::uint64_t id = 0;
  if (CUresult error = load(Method::cuModuleLoadData, image, id); error != CUDA_SUCCESS) return error;
  *module = handleOf<CUmodule>(id);
  return CUDA_SUCCESS;
}

std::uint64_t kernelOfFunction(std::uint64_t function) noexcept {
  auto& known = lookups();
  std::lock_guard lock(known.mutex);
  auto it = known.functionKernels.find(function);
  return it != known.functionKernels.end() ? it->second : function;
}

}  // namespace flyt::interpose::cu

using namespace flyt::interpose::cu;
namespace api = flyt::api;

FLYT_CU_EXPORT CUresult cuModuleLoadData(CUmodule* module, const void* image) { return loadModuleImage(module, image); }

// JIT options are hints to the worker's compiler; Flyt does not pass them (log buffers stay as
// the application left them).
FLYT_CU_EXPORT CUresult cuModuleLoadDataEx(CUmodule* module, const void* image, unsigned int, CUjit_option*, void**) {
  return loadModuleImage(module, image);
}

FLYT_CU_EXPORT CUresult cuModuleLoad(CUmodule* module, const char* fname) {
  std::vector<char> contents;
  if (CUresult error = readFile(fname, contents); error != CUDA_SUCCESS) return error;
  return loadModuleImage(module, contents.data());
}

FLYT_CU_EXPORT CUresult cuLibraryLoadData(CUlibrary* library, const void* code, CUjit_option*, void**, unsigned int,
                                          CUlibraryOption*, void**, unsigned int) {
  if (library == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::uint64_t id = 0;
  if (CUresult error = load(Method::cuLibraryLoadData, code, id); error != CUDA_SUCCESS) return error;
  *library = handleOf<CUlibrary>(id);
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuLibraryLoadFromFile(CUlibrary* library, const char* fileName, CUjit_option* jitOptions,
                                              void** jitOptionsValues, unsigned int numJitOptions,
                                              CUlibraryOption* libraryOptions, void** libraryOptionValues,
                                              unsigned int numLibraryOptions) {
  std::vector<char> contents;
  if (CUresult error = readFile(fileName, contents); error != CUDA_SUCCESS) return error;
  return cuLibraryLoadData(library, contents.data(), jitOptions, jitOptionsValues, numJitOptions, libraryOptions,
                           libraryOptionValues, numLibraryOptions);
}

FLYT_CU_EXPORT CUresult cuModuleGetFunction(CUfunction* hfunc, CUmodule hmod, const char* name) {
  if (hfunc == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::uint64_t id = 0;
  if (CUresult error = lookup(Method::cuModuleGetFunction, wireHandle(hmod), name, id); error != CUDA_SUCCESS) return error;
  *hfunc = handleOf<CUfunction>(id);
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuModuleEnumerateFunctions(CUfunction* functions, unsigned int numFunctions, CUmodule mod) {
  if (functions == nullptr && numFunctions != 0) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(wireHandle(mod));
  writer.put(static_cast<std::uint32_t>(numFunctions));
  auto outcome = DriverCall().call(Method::cuModuleEnumerateFunctions, args);
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  api::ArgReader reader(outcome.results);
  std::uint32_t count = 0;
  if (!reader.get(count) || count != numFunctions) return CUDA_ERROR_UNKNOWN;
  for (std::uint32_t i = 0; i < count; ++i) {
    std::uint64_t id = 0;
    std::string name;
    if (!reader.get(id) || id == 0 || !reader.getString(name) || !readLayout(reader, id)) return CUDA_ERROR_UNKNOWN;
    DriverState::get().setName(id, std::move(name));
    functions[i] = handleOf<CUfunction>(id);
  }
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuLibraryGetKernel(CUkernel* pKernel, CUlibrary library, const char* name) {
  if (pKernel == nullptr) return CUDA_ERROR_INVALID_VALUE;
  std::uint64_t id = 0;
  if (CUresult error = lookup(Method::cuLibraryGetKernel, wireHandle(library), name, id); error != CUDA_SUCCESS) return error;
  *pKernel = handleOf<CUkernel>(id);
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuKernelGetFunction(CUfunction* pFunc, CUkernel kernel) {
  if (pFunc == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  auto& known = lookups();
  const std::tuple key{wireHandle(kernel), wireHandle(DriverState::get().current()),
                       DriverState::get().contextEpoch().load(std::memory_order_acquire)};
  {
    std::lock_guard lock(known.mutex);
    if (auto it = known.kernelFunctions.find(key); it != known.kernelFunctions.end()) {
      *pFunc = handleOf<CUfunction>(it->second);
      return CUDA_SUCCESS;
    }
  }
  std::vector<std::byte> args;
  api::ArgWriter(args).put(wireHandle(kernel));
  auto outcome = DriverCall().call(Method::cuKernelGetFunction, args);
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  std::uint64_t id = 0;
  api::ArgReader reader(outcome.results);
  if (!reader.get(id) || id == 0) return CUDA_ERROR_UNKNOWN;
  if (auto layout = DriverState::get().layout(wireHandle(kernel))) DriverState::get().setLayout(id, std::move(*layout));
  if (const char* name = DriverState::get().name(wireHandle(kernel))) DriverState::get().setName(id, name);
  {
    std::lock_guard lock(known.mutex);
    known.kernelFunctions.emplace(key, id);
    known.functionKernels.emplace(id, wireHandle(kernel));
  }
  *pFunc = handleOf<CUfunction>(id);
  return CUDA_SUCCESS;
}

// A module's or library's variable: its range becomes one of the session's device ranges here too
// (pointer queries, unified-address copies of cudaMemcpyToSymbol). Wire: {u64 owner, string name}
// -> {u64 address, u64 bytes}.
namespace flyt::interpose::cu {
namespace {
CUresult global(Method method, std::uint64_t owner, const char* name, CUdeviceptr* dptr, std::size_t* bytes) {
  if (name == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  writer.put(owner);
  writer.putString(name);
  auto outcome = DriverCall().call(method, args);
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  std::uint64_t address = 0, size = 0;
  api::ArgReader reader(outcome.results);
  if (!reader.get(address) || !reader.get(size)) return CUDA_ERROR_UNKNOWN;
  DriverState::get().allocated(address, size);
  if (dptr != nullptr) *dptr = address;
  if (bytes != nullptr) *bytes = size;
  return CUDA_SUCCESS;
}
}  // namespace
}  // namespace flyt::interpose::cu

FLYT_CU_EXPORT CUresult cuModuleGetGlobal_v2(CUdeviceptr* dptr, size_t* bytes, CUmodule hmod, const char* name) {
  return global(Method::cuModuleGetGlobal_v2, wireHandle(hmod), name, dptr, bytes);
}
FLYT_CU_EXPORT CUresult cuLibraryGetGlobal(CUdeviceptr* dptr, size_t* bytes, CUlibrary library, const char* name) {
  return global(Method::cuLibraryGetGlobal, wireHandle(library), name, dptr, bytes);
}

FLYT_CU_EXPORT CUresult cuFuncGetParamInfo(CUfunction func, size_t paramIndex, size_t* paramOffset, size_t* paramSize) {
  return paramInfo(wireHandle(func), paramIndex, paramOffset, paramSize);
}
FLYT_CU_EXPORT CUresult cuKernelGetParamInfo(CUkernel kernel, size_t paramIndex, size_t* paramOffset, size_t* paramSize) {
  return paramInfo(wireHandle(kernel), paramIndex, paramOffset, paramSize);
}
FLYT_CU_EXPORT CUresult cuFuncGetName(const char** name, CUfunction hfunc) { return nameOf(wireHandle(hfunc), name); }
FLYT_CU_EXPORT CUresult cuKernelGetName(const char** name, CUkernel hfunc) { return nameOf(wireHandle(hfunc), name); }
