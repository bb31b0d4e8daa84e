// Images, modules and libraries, their functions, kernels and globals, and launches
// (interpose/driver/modules.cpp and launch.cpp are the other side).
//
// An image is uploaded once per session in chunks, in order, and loaded by its hash, which is
// checked against the bytes before the driver sees them; the worker holds only the bytes that
// arrived, never the size a chunk announces. A function's or kernel's parameter layout is read
// from the driver (cuFuncGetParamInfo / cuKernelGetParamInfo) and returned with its lookup.
// Launches pass the packed parameter block to the driver as CU_LAUNCH_PARAM_BUFFER_POINTER, never
// shorter than the layout. A module's functions, a library's kernels, their functions and the
// globals of either are forgotten when it is unloaded (HandleTable::own).
#include "flyt/api/fatbin.hpp"
#include "handlers.hpp"

namespace flyt::backend::cu {
namespace {

constexpr std::uint32_t kUnknownLayout = 0xffffffffU;
// The largest parameter block a CUDA 12.1+ kernel may take.
constexpr std::uint32_t kMaxParamBytes = 32764;

using ParamInfo = CUresult (*)(void*, std::size_t, std::size_t*, std::size_t*);

// {u32 count, u32 bytes, count x {u32 offset, u32 size}}, or kUnknownLayout where the driver cannot say.
// A kernel looked up while no context is current cannot say (its library is loaded into a context
// lazily): the layout is then unknown, and the client asks again at the launch (flytGetParamLayout).
// A known layout's byte count is kept for `id`, whose launches must carry at least that many.
void writeLayout(ServeContext& c, api::ArgWriter& writer, ParamInfo info, void* handle, std::uint64_t id) {
  std::vector<std::pair<std::uint32_t, std::uint32_t>> params;
  std::uint32_t bytes = 0;
  bool known = info != nullptr;
  for (std::size_t i = 0; known; ++i) {
    std::size_t offset = 0, size = 0;
    const CUresult error = info(handle, i, &offset, &size);
    if (error == CUDA_ERROR_INVALID_VALUE) break;  // past the last parameter
    if (i == 0 && error != CUDA_SUCCESS && error != CUDA_ERROR_NOT_SUPPORTED) {
      CUcontext current{};
      if (c.driver().cuCtxGetCurrent(&current) != CUDA_SUCCESS || current == nullptr) {
        known = false;
        break;
      }
      break;  // a kernel without parameters answers its first index with another error than past-the-end
    }
    if (error != CUDA_SUCCESS || offset + size > kMaxParamBytes) {
      known = false;
      break;
    }
    params.emplace_back(static_cast<std::uint32_t>(offset), static_cast<std::uint32_t>(size));
    bytes = std::max(bytes, static_cast<std::uint32_t>(offset + size));
  }
  writer.put(known ? static_cast<std::uint32_t>(params.size()) : kUnknownLayout);
  writer.put(bytes);
  if (!known) {
    c.paramBytes.erase(id);
    return;
  }
  c.paramBytes[id] = bytes;
  for (const auto& [offset, size] : params) {
    writer.put(offset);
    writer.put(size);
  }
}

template <class Handle>
ParamInfo erased(CUresult (*fn)(Handle, std::size_t, std::size_t*, std::size_t*)) {
  return reinterpret_cast<ParamInfo>(fn);
}

bool allowedAttribute(CUlaunchAttributeID id) {
  switch (id) {
    case CU_LAUNCH_ATTRIBUTE_IGNORE:
    case CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW:
    case CU_LAUNCH_ATTRIBUTE_COOPERATIVE:
    case CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION:
    case CU_LAUNCH_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE:
    case CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION:
    case CU_LAUNCH_ATTRIBUTE_PRIORITY:
    case CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN_MAP:
    case CU_LAUNCH_ATTRIBUTE_MEM_SYNC_DOMAIN:
    case CU_LAUNCH_ATTRIBUTE_PREFERRED_CLUSTER_DIMENSION:
    case CU_LAUNCH_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT: return true;
    default: return false;  // events (handles inside the value) and graph-only attributes
  }
}

}  // namespace

Outcome serveUploadImage(ServeContext& c, CallInput in) {
  std::uint64_t hash = 0, total = 0, offset = 0;
  if (!in.args.get(hash) || !in.args.get(total) || !in.args.get(offset) || !in.args.exhausted()) {
    return c.malformed("flytUploadImage: bad arguments");
  }
  if (total == 0 || total > api::kMaxFatbinBytes) return c.malformed(fmt::format("flytUploadImage: an image of {} bytes", total));
  if (in.bulk.empty()) return c.malformed("flytUploadImage: an empty chunk");
  auto found = c.images.find(hash);
  // A chunk at offset 0 starts the image (again: an upload the client repeats after a failure).
  const std::uint64_t expected = offset == 0 || found == c.images.end() ? 0 : found->second.bytes.size();
  if ((found != c.images.end() && offset != 0 && found->second.total != total) || offset != expected ||
      in.bulk.size() > total - offset) {
    return c.malformed(fmt::format("flytUploadImage: chunk {}+{} of an image of {} bytes, {} expected next", offset,
                                   in.bulk.size(), total, expected));
  }
  auto& image = c.images[hash];
  if (offset == 0) image = ServeContext::Image{{}, total};
  image.bytes.insert(image.bytes.end(), in.bulk.begin(), in.bulk.end());
  return {};
}

Outcome serveLoadImage(ServeContext& c, CallInput in, bool library) {
  const char* function = library ? "cuLibraryLoadData" : "cuModuleLoadData";
  std::uint64_t hash = 0, bytes = 0;
  if (!in.args.get(hash) || !in.args.get(bytes) || !in.args.exhausted()) return c.malformed(fmt::format("{}: bad arguments", function));
  auto it = c.images.find(hash);
  if (it == c.images.end() || it->second.bytes.size() != bytes || it->second.total != bytes ||
      api::fatbinHash(it->second.bytes) != hash) {
    return c.malformed(fmt::format("{}: image {:016x} was not uploaded whole", function, hash));
  }
  const void* image = it->second.bytes.data();
  Outcome out;
  if (library) {
    if (c.driver().cuLibraryLoadData == nullptr) return c.unsupported(function);
    CUlibrary loaded{};
    out.error = c.driver().cuLibraryLoadData(&loaded, image, nullptr, nullptr, 0, nullptr, nullptr, 0);
    if (out.error == CUDA_SUCCESS) api::ArgWriter(out.results).put(c.handles().create(HandleKind::library, loaded));
  } else {
    CUmodule loaded{};
    out.error = c.driver().cuModuleLoadData(&loaded, image);
    if (out.error == CUDA_SUCCESS) api::ArgWriter(out.results).put(c.handles().create(HandleKind::module, loaded));
  }
  return out;
}

Outcome serveGetFunction(ServeContext& c, CallInput in) {
  CUmodule module{};
  std::string name;
  if (!in.args.get(module) || !in.args.getString(name) || !in.args.exhausted()) return c.malformed("cuModuleGetFunction: bad arguments");
  CUmodule real{};
  if (auto refused = c.handles().use("cuModuleGetFunction", "hmod", module, {HandleKind::module}, &real)) return *refused;
  Outcome out;
  CUfunction function{};
  if ((out.error = c.driver().cuModuleGetFunction(&function, real, name.c_str())) != CUDA_SUCCESS) return out;
  const CUfunction id = c.handles().lookup(HandleKind::function, function);
  c.handles().own(id, module);
  api::ArgWriter writer(out.results);
  writer.put(id);
  writeLayout(c, writer, c.driver().cuFuncGetParamInfo ? erased(c.driver().cuFuncGetParamInfo) : nullptr, function,
              reinterpret_cast<std::uint64_t>(id));
  return out;
}

Outcome serveParamLayout(ServeContext& c, CallInput in) {
  constexpr const char* kName = "flytGetParamLayout";
  std::uint64_t id = 0;
  if (!in.args.get(id) || !in.args.exhausted()) return c.malformed(fmt::format("{}: bad arguments", kName));
  Outcome out;
  api::ArgWriter writer(out.results);
  const auto& d = c.driver();
  if (const std::uint64_t function = c.handles().realOf(id, HandleKind::function); function != 0) {
    writeLayout(c, writer, d.cuFuncGetParamInfo ? erased(d.cuFuncGetParamInfo) : nullptr, reinterpret_cast<void*>(function), id);
  } else if (const std::uint64_t kernel = c.handles().realOf(id, HandleKind::kernel); kernel != 0) {
    writeLayout(c, writer, d.cuKernelGetParamInfo ? erased(d.cuKernelGetParamInfo) : nullptr, reinterpret_cast<void*>(kernel), id);
  } else {
    return c.malformed(fmt::format("{}: {:#x} is no function or kernel of this session", kName, id));
  }
  return out;
}

// Every function of a module, each with its name and layout; `count` must be the module's count
// (cuModuleGetFunctionCount), as the driver requires.
Outcome serveEnumerateFunctions(ServeContext& c, CallInput in) {
  constexpr const char* kName = "cuModuleEnumerateFunctions";
  CUmodule module{};
  std::uint32_t count = 0;
  if (!in.args.get(module) || !in.args.get(count) || !in.args.exhausted()) return c.malformed(fmt::format("{}: bad arguments", kName));
  CUmodule real{};
  if (auto refused = c.handles().use(kName, "mod", module, {HandleKind::module}, &real)) return *refused;
  const auto& d = c.driver();
  if (d.cuModuleGetFunctionCount == nullptr || d.cuModuleEnumerateFunctions == nullptr || d.cuFuncGetName == nullptr) {
    return c.unsupported(kName);
  }
  Outcome out;
  unsigned actual = 0;
  if ((out.error = d.cuModuleGetFunctionCount(&actual, real)) != CUDA_SUCCESS) return out;
  if (count != actual) {
    out.error = CUDA_ERROR_INVALID_VALUE;
    return out;
  }
  std::vector<CUfunction> functions(count);
  if ((out.error = d.cuModuleEnumerateFunctions(functions.data(), count, real)) != CUDA_SUCCESS) return out;
  api::ArgWriter writer(out.results);
  writer.put(count);
  for (CUfunction function : functions) {
    const char* name = nullptr;
    if ((out.error = d.cuFuncGetName(&name, function)) != CUDA_SUCCESS || name == nullptr) {
      if (out.error == CUDA_SUCCESS) out.error = CUDA_ERROR_UNKNOWN;
      out.results.clear();
      return out;
    }
    const CUfunction id = c.handles().lookup(HandleKind::function, function);
    c.handles().own(id, module);
    writer.put(id);
    writer.putString(name);
    writeLayout(c, writer, d.cuFuncGetParamInfo ? erased(d.cuFuncGetParamInfo) : nullptr, function,
                reinterpret_cast<std::uint64_t>(id));
  }
  return out;
}

Outcome serveGetKernel(ServeContext& c, CallInput in) {
  CUlibrary library{};
  std::string name;
  if (!in.args.get(library) || !in.args.getString(name) || !in.args.exhausted()) return c.malformed("cuLibraryGetKernel: bad arguments");
  CUlibrary real{};
  if (auto refused = c.handles().use("cuLibraryGetKernel", "library", library, {HandleKind::library}, &real)) return *refused;
  if (c.driver().cuLibraryGetKernel == nullptr) return c.unsupported("cuLibraryGetKernel");
  Outcome out;
  CUkernel kernel{};
  if ((out.error = c.driver().cuLibraryGetKernel(&kernel, real, name.c_str())) != CUDA_SUCCESS) return out;
  const CUkernel id = c.handles().lookup(HandleKind::kernel, kernel);
  c.handles().own(id, library);
  api::ArgWriter writer(out.results);
  writer.put(id);
  writeLayout(c, writer, c.driver().cuKernelGetParamInfo ? erased(c.driver().cuKernelGetParamInfo) : nullptr, kernel,
              reinterpret_cast<std::uint64_t>(id));
  return out;
}

Outcome serveKernelFunction(ServeContext& c, CallInput in) {
  CUkernel kernel{};
  if (!in.args.get(kernel) || !in.args.exhausted()) return c.malformed("cuKernelGetFunction: bad arguments");
  CUkernel real{};
  if (auto refused = c.handles().use("cuKernelGetFunction", "kernel", kernel, {HandleKind::kernel}, &real)) return *refused;
  if (c.driver().cuKernelGetFunction == nullptr) return c.unsupported("cuKernelGetFunction");
  Outcome out;
  CUfunction function{};
  if ((out.error = c.driver().cuKernelGetFunction(&function, real)) != CUDA_SUCCESS) return out;
  const CUfunction id = c.handles().lookup(HandleKind::function, function);
  c.handles().own(id, kernel);
  if (auto known = c.paramBytes.find(reinterpret_cast<std::uint64_t>(kernel)); known != c.paramBytes.end()) {
    c.paramBytes[reinterpret_cast<std::uint64_t>(id)] = known->second;
  }
  api::ArgWriter(out.results).put(id);
  return out;
}

// A module's or library's global: its range becomes one the session may copy to and from, until
// the module or library is unloaded.
Outcome serveGetGlobal(ServeContext& c, CallInput in, bool library) {
  const char* function = library ? "cuLibraryGetGlobal" : "cuModuleGetGlobal_v2";
  std::uint64_t owner = 0;
  std::string name;
  if (!in.args.get(owner) || !in.args.getString(name) || !in.args.exhausted()) return c.malformed(fmt::format("{}: bad arguments", function));
  Outcome out;
  CUdeviceptr address = 0;
  std::size_t bytes = 0;
  if (library) {
    CUlibrary real{};
    if (auto refused = c.handles().use(function, "library", reinterpret_cast<CUlibrary>(owner), {HandleKind::library}, &real)) return *refused;
    if (c.driver().cuLibraryGetGlobal == nullptr) return c.unsupported(function);
    out.error = c.driver().cuLibraryGetGlobal(&address, &bytes, real, name.c_str());
  } else {
    CUmodule real{};
    if (auto refused = c.handles().use(function, "hmod", reinterpret_cast<CUmodule>(owner), {HandleKind::module}, &real)) return *refused;
    out.error = c.driver().cuModuleGetGlobal_v2(&address, &bytes, real, name.c_str());
  }
  if (out.error != CUDA_SUCCESS) return out;
  c.addGlobal(address, bytes, owner);
  api::ArgWriter writer(out.results);
  writer.put(address);
  writer.put(bytes);
  return out;
}

std::optional<Outcome> readConfig(ServeContext& c, CallInput in, const char* name, bool extended, LaunchConfig& config) {
  CUfunction function{};
  CUstream stream{};
  if (!in.args.get(function)) return c.malformed(fmt::format("{}: bad arguments", name));
  for (auto& dim : config.dims) {
    if (!in.args.get(dim)) return c.malformed(fmt::format("{}: bad arguments", name));
  }
  if (!in.args.get(config.sharedBytes) || !in.args.get(stream)) return c.malformed(fmt::format("{}: bad arguments", name));
  if (extended) {
    std::uint32_t count = 0;
    if (!in.args.get(count) || count > 64) return c.malformed(fmt::format("{}: bad attribute count", name));
    config.attributes.resize(count);
    for (auto& attribute : config.attributes) {
      if (!in.args.get(attribute)) return c.malformed(fmt::format("{}: short attributes", name));
      if (!allowedAttribute(attribute.id)) {
        Outcome out = c.unsupported(name);
        out.detail = fmt::format("{}: launch attribute {} is not served", name, static_cast<int>(attribute.id));
        return out;
      }
    }
  }
  if (auto refused = c.handles().use(name, "f", function, {HandleKind::function, HandleKind::kernel}, &config.function)) return refused;
  config.functionId = reinterpret_cast<std::uint64_t>(function);
  if (config.function == nullptr) return c.malformed(fmt::format("{}: a null function", name));
  return c.handles().use(name, "hStream", stream, {HandleKind::stream}, &config.stream);
}

std::optional<Outcome> readBlock(ServeContext& c, CallInput in, const char* name, const LaunchConfig& config,
                                 std::vector<std::byte>& block) {
  std::uint32_t blockBytes = 0;
  std::span<const std::byte> bytes;
  if (!in.args.get(blockBytes) || blockBytes > kMaxParamBytes || !in.args.getBytes(blockBytes, bytes)) {
    return c.malformed(fmt::format("{}: bad parameter block", name));
  }
  // The driver would read the kernel's parameters past the end of a shorter block.
  if (auto known = c.paramBytes.find(config.functionId); known != c.paramBytes.end() && blockBytes < known->second) {
    return c.malformed(fmt::format("{}: a {}-byte parameter block for a function that takes {}", name, blockBytes,
                                   known->second));
  }
  block.assign(bytes.begin(), bytes.end());
  return std::nullopt;
}

Outcome serveActiveClusters(ServeContext& c, CallInput in) {
  LaunchConfig config;
  if (auto refused = readConfig(c, in, "cuOccupancyMaxActiveClusters", true, config)) return *refused;
  if (!in.args.exhausted()) return c.malformed("cuOccupancyMaxActiveClusters: trailing arguments");
  if (c.driver().cuOccupancyMaxActiveClusters == nullptr) return c.unsupported("cuOccupancyMaxActiveClusters");
  CUlaunchConfig driverConfig = config.driverConfig();
  int clusters = 0;
  Outcome out;
  out.error = c.driver().cuOccupancyMaxActiveClusters(&clusters, config.function, &driverConfig);
  if (out.error == CUDA_SUCCESS) api::ArgWriter(out.results).put(static_cast<std::int32_t>(clusters));
  return out;
}

Outcome serveLaunch(ServeContext& c, CallInput in, bool extended) {
  const char* name = extended ? "cuLaunchKernelEx" : "cuLaunchKernel";
  LaunchConfig config;
  if (auto refused = readConfig(c, in, name, extended, config)) return *refused;
  // The driver copies the block before it returns.
  std::vector<std::byte> copy;
  if (auto refused = readBlock(c, in, name, config, copy)) return *refused;
  if (!in.args.exhausted()) return c.malformed(fmt::format("{}: trailing arguments", name));
  std::size_t size = copy.size();
  void* extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, copy.data(), CU_LAUNCH_PARAM_BUFFER_SIZE, &size, CU_LAUNCH_PARAM_END};
  Outcome out;
  const auto* d = config.dims;
  if (!extended) {
    out.error = c.driver().cuLaunchKernel(config.function, d[0], d[1], d[2], d[3], d[4], d[5], config.sharedBytes,
                                          config.stream, nullptr, extra);
  } else {
    if (c.driver().cuLaunchKernelEx == nullptr) return c.unsupported(name);
    CUlaunchConfig driverConfig = config.driverConfig();
    out.error = c.driver().cuLaunchKernelEx(&driverConfig, config.function, nullptr, extra);
  }
  if (out.error != CUDA_SUCCESS) {  // what the worker's debug log says of a failed launch
    out.detail = fmt::format("{} of function {} grid {}x{}x{} block {}x{}x{}, {} shared bytes, stream {}, {} parameter "
                             "bytes, {} attributes", name, static_cast<const void*>(config.function), d[0], d[1], d[2],
                             d[3], d[4], d[5], config.sharedBytes, static_cast<const void*>(config.stream), size,
                             config.attributes.size());
  }
  return out;
}

}  // namespace flyt::backend::cu
