#include "module_cache.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "flyt/api/fatbin.hpp"
#include "flyt/transport/log.hpp"

namespace flyt::backend {
namespace {

spdlog::logger& log() { return flyt::logger("worker"); }

std::unexpected<ModuleCache::Failure> malformed(std::string detail) {
  return std::unexpected(ModuleCache::Failure{cudaErrorInvalidValue, std::move(detail), true});
}
std::unexpected<ModuleCache::Failure> failed(cudaError_t error, std::string detail) {
  return std::unexpected(ModuleCache::Failure{error, std::move(detail), false});
}

std::string cachePath(const std::string& directory, std::uint64_t hash) {
  return fmt::format("{}/{:016x}.fatbin", directory, hash);
}

// The image's bytes hash to `hash` and its header says `total` bytes.
bool imageIsWhole(std::uint64_t hash, std::uint64_t total, std::span<const std::byte> image) {
  if (image.size() != total || api::fatbinHash(image) != hash) return false;
  auto bytes = api::fatbinImageBytes(image.data(), image.size());
  return bytes && *bytes == total;
}

}  // namespace

FatbinStore FatbinStore::fromEnvironment() {
  if (const char* dir = std::getenv("FLYT_CACHE_DIR")) return FatbinStore(dir);
  return FatbinStore(fmt::format("/dev/shm/flyt-fatbins-{}", ::geteuid()));
}

bool FatbinStore::ready() {
  if (m_state != 0) return m_state > 0;
  m_state = -1;
  if (!enabled()) return false;
  if (::mkdir(m_directory.c_str(), 0700) != 0 && errno != EEXIST) {
    log().warn("fatbin cache {}: cannot create it ({}); not caching", m_directory, std::strerror(errno));
    return false;
  }
  struct stat st{};
  if (::lstat(m_directory.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() ||
      (st.st_mode & 077) != 0) {
    log().warn("fatbin cache {}: not a directory of this user closed to others; not caching", m_directory);
    return false;
  }
  m_state = 1;
  return true;
}

std::optional<std::vector<std::byte>> FatbinStore::find(std::uint64_t hash, std::uint64_t total) {
  if (total == 0 || total > api::kMaxFatbinBytes || !ready()) return std::nullopt;
  const std::string path = cachePath(m_directory, hash);
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::vector<std::byte> image;
  struct stat st{};
  bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) == total;
  if (ok) {
    image.resize(total);
    for (std::size_t done = 0; ok && done < total;) {
      const ssize_t n = ::read(fd, image.data() + done, total - done);
      if (n < 0 && errno == EINTR) continue;
      ok = n > 0;
      if (ok) done += static_cast<std::size_t>(n);
    }
  }
  ::close(fd);
  if (!ok || !imageIsWhole(hash, total, image)) {
    log().warn("fatbin cache: {} is not the {}-byte image of that hash; ignored", path, total);
    return std::nullopt;
  }
  return image;
}

void FatbinStore::store(std::uint64_t hash, std::span<const std::byte> image) {
  if (image.empty() || image.size() > api::kMaxFatbinBytes || !ready()) return;
  const std::string path = cachePath(m_directory, hash);
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) return;
  static std::atomic<unsigned> counter{0};
  const std::string temp = fmt::format("{}/.{:016x}.{}.{}.tmp", m_directory, hash, ::getpid(), counter++);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) {
    log().warn("fatbin cache: cannot create {} ({})", temp, std::strerror(errno));
    return;
  }
  bool ok = true;
  for (std::size_t done = 0; ok && done < image.size();) {
    const ssize_t n = ::write(fd, image.data() + done, image.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += static_cast<std::size_t>(n);
  }
  ok = (::close(fd) == 0) && ok;
  if (!ok || ::rename(temp.c_str(), path.c_str()) != 0) {
    log().warn("fatbin cache: cannot store {} ({})", path, std::strerror(errno));
    ::unlink(temp.c_str());
    return;
  }
  log().debug("fatbin {:016x} ({} bytes) stored in the node's cache", hash, image.size());
}

ModuleCache::~ModuleCache() {
  for (auto& [id, module] : m_modules) (void)m_executor.unloadModule(module.library);
}

ModuleCache::Result<std::uint64_t> ModuleCache::receive(std::uint64_t hash, std::uint64_t total,
                                                        std::uint64_t offset, std::span<const std::byte> chunk) {
  if (total == 0 || total > api::kMaxFatbinBytes) return malformed(fmt::format("fatbin of {} bytes", total));
  if (offset == 0) m_upload = Upload{hash, total, {}};
  if (m_upload.hash != hash || m_upload.total != total || offset != m_upload.bytes.size() ||
      chunk.size() > total - offset) {
    m_upload = Upload{};
    return malformed(fmt::format("fatbin {:016x}: chunk {}+{} out of order", hash, offset, chunk.size()));
  }
  m_upload.bytes.insert(m_upload.bytes.end(), chunk.begin(), chunk.end());
  if (m_upload.bytes.size() < total) return 0;
  return load(std::exchange(m_upload, Upload{}));
}

ModuleCache::Result<std::uint64_t> ModuleCache::lookup(std::uint64_t hash, std::uint64_t total) {
  if (total == 0 || total > api::kMaxFatbinBytes) return malformed(fmt::format("fatbin of {} bytes", total));
  for (const auto& [id, module] : m_modules) {
    if (module.hash == hash && module.image.size() == total) return id;
  }
  auto image = m_store.find(hash, total);
  if (!image) return 0;
  log().info("fatbin {:016x} from the node's cache", hash);
  return loadChecked(hash, std::move(*image));
}

ModuleCache::Result<std::uint64_t> ModuleCache::load(Upload upload) {
  if (api::fatbinHash(upload.bytes) != upload.hash) {
    return malformed(fmt::format("fatbin {:016x}: the bytes do not have that hash", upload.hash));
  }
  if (auto bytes = api::fatbinImageBytes(upload.bytes.data(), upload.bytes.size()); !bytes || *bytes != upload.total) {
    return malformed(fmt::format("fatbin {:016x}: {}", upload.hash,
                                 bytes ? "its header disagrees with its size" : api::describe(bytes.error())));
  }
  for (const auto& [id, module] : m_modules) {
    if (module.hash == upload.hash) return id;
  }
  auto id = loadChecked(upload.hash, std::move(upload.bytes));
  if (id) m_store.store(upload.hash, m_modules.at(*id).image);  // only images that load
  return id;
}

// `image` has been checked against `hash` and its header.
ModuleCache::Result<std::uint64_t> ModuleCache::loadChecked(std::uint64_t hash, std::vector<std::byte> image) {
  const std::size_t total = image.size();
  Module module{hash, std::move(image), nullptr};
  if (auto error = m_executor.loadModule(module.image, &module.library); error != cudaSuccess) {
    return failed(error, fmt::format("loading fatbin {:016x} ({} bytes) failed", hash, total));
  }
  const std::uint64_t id = m_nextModule++;
  log().debug("fatbin {:016x} ({} bytes) loaded as module {}", hash, total, id);
  m_modules.emplace(id, std::move(module));
  return id;
}

ModuleCache::Result<ModuleCache::KernelInfo> ModuleCache::kernel(std::uint64_t module, std::string_view name) {
  auto it = m_modules.find(module);
  if (it == m_modules.end()) return malformed(fmt::format("kernel lookup in unknown module {}", module));
  if (name.empty() || name.find('\0') != std::string_view::npos) return malformed("kernel lookup: bad name");
  std::pair<std::uint64_t, std::string> key{module, std::string(name)};
  if (auto known = m_kernelIds.find(key); known != m_kernelIds.end()) {
    return KernelInfo{known->second, &m_kernels.at(known->second).layout};
  }
  Kernel kernel;
  kernel.name = key.second;
  if (auto error = m_executor.getKernel(it->second.library, kernel.name.c_str(), &kernel.handle, &kernel.layout);
      error != cudaSuccess) {
    return failed(error, fmt::format("kernel {} in module {}: {} on {}", kernel.name, module,
                                     ::cudaGetErrorName(error), m_executor.describe()));
  }
  for (const auto& param : kernel.layout) {
    kernel.paramBytes = std::max<std::size_t>(kernel.paramBytes, std::size_t{param.offset} + param.size);
  }
  const std::uint64_t id = m_nextKernel++;
  m_kernelIds.emplace(std::move(key), id);
  auto& stored = m_kernels.emplace(id, std::move(kernel)).first->second;
  return KernelInfo{id, &stored.layout};
}

ModuleCache::Result<void> ModuleCache::checkGeometry(dim3 grid, dim3 block) {
  if (!m_haveLimits) {
    int device = 0;
    if (auto error = m_executor.cudaGetDevice(&device); error != cudaSuccess) return failed(error, "cudaGetDevice");
    if (auto error = m_executor.deviceProperties(&m_limits, device); error != cudaSuccess) {
      return failed(error, "device properties for the launch limits");
    }
    m_haveLimits = true;
  }
  const unsigned g[3] = {grid.x, grid.y, grid.z};
  const unsigned b[3] = {block.x, block.y, block.z};
  for (int i = 0; i < 3; ++i) {
    if (g[i] == 0 || b[i] == 0 || g[i] > static_cast<unsigned>(m_limits.maxGridSize[i]) ||
        b[i] > static_cast<unsigned>(m_limits.maxThreadsDim[i])) {
      return failed(cudaErrorInvalidConfiguration,
                    fmt::format("launch <<<({},{},{}), ({},{},{})>>> outside the device's limits", grid.x,
                                grid.y, grid.z, block.x, block.y, block.z));
    }
  }
  if (std::uint64_t{block.x} * block.y * block.z > static_cast<std::uint64_t>(m_limits.maxThreadsPerBlock)) {
    return failed(cudaErrorInvalidConfiguration,
                  fmt::format("block of {} threads, the device allows {}",
                              std::uint64_t{block.x} * block.y * block.z, m_limits.maxThreadsPerBlock));
  }
  return {};
}

// Dynamic shared memory beyond what a block can have is refused here rather than left to the
// runtime: the stand-in would accept it, and the figure reaches the driver unchecked otherwise.
ModuleCache::Result<void> ModuleCache::checkSharedMemory(std::uint64_t sharedMem) const {
  const std::uint64_t limit =
      std::max<std::uint64_t>(m_limits.sharedMemPerBlockOptin, m_limits.sharedMemPerBlock);
  if (sharedMem > limit) {
    return failed(cudaErrorInvalidValue,
                  fmt::format("launch with {} bytes of dynamic shared memory, the device allows {}", sharedMem,
                              limit));
  }
  return {};
}

ModuleCache::Result<void> ModuleCache::launch(std::uint64_t kernel, dim3 grid, dim3 block, std::uint64_t sharedMem,
                                              cudaStream_t stream, std::span<const std::byte> params,
                                              const Executor::LaunchOptions* options) {
  auto it = m_kernels.find(kernel);
  if (it == m_kernels.end()) return malformed(fmt::format("launch of unknown kernel {}", kernel));
  const auto& k = it->second;
  if (params.size() != k.paramBytes) {
    return malformed(fmt::format("launch of {}: {} parameter bytes, the kernel takes {}", k.name, params.size(),
                                 k.paramBytes));
  }
  if (auto geometry = checkGeometry(grid, block); !geometry) return geometry;
  if (auto shared = checkSharedMemory(sharedMem); !shared) return shared;
  // An aligned copy: the parameter block arrives at any offset inside the message.
  struct alignas(16) Block16 {
    std::byte bytes[16];
  };
  std::vector<Block16> aligned((params.size() + 15) / 16);
  if (!params.empty()) std::memcpy(aligned.data(), params.data(), params.size());
  std::vector<void*> pointers;
  pointers.reserve(k.layout.size());
  for (const auto& param : k.layout) pointers.push_back(reinterpret_cast<std::byte*>(aligned.data()) + param.offset);
  const cudaError_t error =
      options != nullptr
          ? m_executor.launchKernelEx(k.handle, grid, block, pointers.data(), sharedMem, stream, *options)
          : m_executor.launchKernel(k.handle, grid, block, pointers.data(), sharedMem, stream);
  if (error != cudaSuccess) {
    return failed(error, fmt::format("launch of {}: {}", k.name, ::cudaGetErrorName(error)));
  }
  return {};
}

ModuleCache::Result<cudaKernel_t> ModuleCache::handle(std::uint64_t kernel) const {
  auto it = m_kernels.find(kernel);
  if (it == m_kernels.end()) return malformed(fmt::format("unknown kernel {}", kernel));
  return it->second.handle;
}

void ModuleCache::forgetAll() {
  for (auto& [id, module] : m_modules) (void)m_executor.unloadModule(module.library);
  m_modules.clear();
  m_kernels.clear();
  m_kernelIds.clear();
  m_upload = Upload{};
  m_globals = AllocationTable{};
}

ModuleCache::Result<ModuleCache::Global> ModuleCache::global(std::uint64_t module, std::string_view name,
                                                             std::size_t registeredBytes) {
  auto it = m_modules.find(module);
  if (it == m_modules.end()) return malformed(fmt::format("variable lookup in unknown module {}", module));
  if (name.empty() || name.find('\0') != std::string_view::npos) return malformed("variable lookup: bad name");
  const std::string cname(name);
  Global global;
  if (auto error = m_executor.getGlobal(it->second.library, cname.c_str(), registeredBytes, &global.address,
                                        &global.bytes);
      error != cudaSuccess) {
    return failed(error, fmt::format("variable {} in module {}: {}", cname, module, ::cudaGetErrorName(error)));
  }
  m_globals.add(global.address, global.bytes);
  return global;
}

}  // namespace flyt::backend
