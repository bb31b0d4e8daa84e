// The modules (fatbins), kernels and module variables of one session, on the worker: the other side
// of interpose/src/register_fatbin.cpp, launch_kernel.cpp and symbols.cpp (wire formats there).
//
// Modules and kernels are named on the wire by ids this cache hands out (1, 2, ...), never by the
// runtime's handles, so a client can only reach what its own session loaded. Every launch is
// checked here before it reaches the executor: known kernel, parameter block of the kernel's exact
// size, grid, block and dynamic shared memory within the device's limits. One cache per session, used by one thread.
//
// The node's fatbin cache (FatbinStore) outlives sessions and workers: a directory of images named
// by their FNV-1a hash, `$FLYT_CACHE_DIR` when set (set to the empty string: no cache), otherwise
// `/dev/shm/flyt-fatbins-<uid>/`, shared by every worker of that user on the host; created mode 0700
// and refused unless it is a directory of ours that no one else may enter. A worker stores each image
// it received completely (written to a temporary name, mode 0600, then renamed: readers see whole
// files or none) and answers "have you got hash H of N bytes?" (launch_kernel.cpp) from it. A file's
// name is never trusted: its size must be N (at most api::kMaxFatbinBytes), its bytes must hash to H
// and its header must agree, else it counts as absent. Nothing is evicted: the files live until
// someone deletes them or, under /dev/shm, until the host reboots.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <expected>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "allocation_table.hpp"
#include "flyt/backend/executor.hpp"

namespace flyt::backend {

// The node's fatbin cache (see above). Every failure is logged and makes the cache behave as empty.
class FatbinStore {
 public:
  explicit FatbinStore(std::string directory) : m_directory(std::move(directory)) {}
  [[nodiscard]] static FatbinStore fromEnvironment();  // $FLYT_CACHE_DIR or /dev/shm/flyt-fatbins-<uid>

  [[nodiscard]] bool enabled() const { return !m_directory.empty(); }
  [[nodiscard]] const std::string& directory() const { return m_directory; }
  // The image of `total` bytes with this hash, checked; nullopt if absent or not what it claims.
  [[nodiscard]] std::optional<std::vector<std::byte>> find(std::uint64_t hash, std::uint64_t total);
  // Stores an image already checked against its hash (no-op when a file of that name exists).
  void store(std::uint64_t hash, std::span<const std::byte> image);

 private:
  bool ready();  // creates and checks the directory, once
  std::string m_directory;
  int m_state = 0;  // 0 unchecked, 1 usable, -1 refused
};

class ModuleCache {
 public:
  struct Failure {
    cudaError_t error = cudaErrorInvalidValue;
    std::string detail;
    bool malformed = false;  // the client sent something no correct client sends
  };
  template <class T> using Result = std::expected<T, Failure>;

  struct KernelInfo {
    std::uint64_t id = 0;
    const std::vector<Executor::ParamLayout>* layout = nullptr;  // owned by the cache
  };
  struct Global {
    void* address = nullptr;
    std::size_t bytes = 0;
  };

  explicit ModuleCache(Executor& executor, FatbinStore store = FatbinStore::fromEnvironment())
      : m_executor(executor), m_store(std::move(store)) {}
  ~ModuleCache();  // unloads every module
  ModuleCache(const ModuleCache&) = delete;
  ModuleCache& operator=(const ModuleCache&) = delete;

  // One chunk [offset, offset + chunk.size()) of a fatbin of `total` bytes named `hash`. Chunks come
  // in order. Returns the module id after the last chunk (the same id again for an image this
  // session already loaded), 0 before it.
  [[nodiscard]] Result<std::uint64_t> receive(std::uint64_t hash, std::uint64_t total, std::uint64_t offset,
                                              std::span<const std::byte> chunk);

  // The query before an upload (offset == total, no chunk): the module id if this session already
  // has the image or the node's cache has it (then loaded), 0 if not.
  [[nodiscard]] Result<std::uint64_t> lookup(std::uint64_t hash, std::uint64_t total);

  [[nodiscard]] Result<KernelInfo> kernel(std::uint64_t module, std::string_view name);

  // `stream` has been checked by the caller (it is one of the session's). With `options`, the launch
  // goes through Executor::launchKernelEx (cudaLaunchKernelExC, cudaLaunchCooperativeKernel).
  [[nodiscard]] Result<void> launch(std::uint64_t kernel, dim3 grid, dim3 block, std::uint64_t sharedMem,
                                    cudaStream_t stream, std::span<const std::byte> params,
                                    const Executor::LaunchOptions* options = nullptr);

  // The executor's handle of a kernel this session looked up (kernel attributes and occupancy).
  [[nodiscard]] Result<cudaKernel_t> handle(std::uint64_t kernel) const;

  // cudaDeviceReset: unloads every module and forgets kernels and variables. Ids are not reused, so
  // a client that still names an old one is refused.
  void forgetAll();

  // The variable's range; also remembered as a global, which cudaFree must refuse.
  [[nodiscard]] Result<Global> global(std::uint64_t module, std::string_view name, std::size_t registeredBytes);
  [[nodiscard]] bool isGlobal(const void* base) const { return m_globals.isBase(base); }

 private:
  struct Module {
    std::uint64_t hash = 0;
    std::vector<std::byte> image;  // kept until unloaded (the executor may refer to it)
    cudaLibrary_t library = nullptr;
  };
  struct Kernel {
    std::string name;
    cudaKernel_t handle = nullptr;
    std::vector<Executor::ParamLayout> layout;
    std::size_t paramBytes = 0;
  };
  struct Upload {
    std::uint64_t hash = 0;
    std::uint64_t total = 0;
    std::vector<std::byte> bytes;
  };

  Result<std::uint64_t> load(Upload upload);
  Result<std::uint64_t> loadChecked(std::uint64_t hash, std::vector<std::byte> image);
  Result<void> checkGeometry(dim3 grid, dim3 block);  // also reads the device's limits, once
  Result<void> checkSharedMemory(std::uint64_t sharedMem) const;  // after checkGeometry

  Executor& m_executor;
  FatbinStore m_store;
  Upload m_upload;
  std::map<std::uint64_t, Module> m_modules;
  std::map<std::uint64_t, Kernel> m_kernels;
  std::map<std::pair<std::uint64_t, std::string>, std::uint64_t> m_kernelIds;  // (module, name) -> id
  std::uint64_t m_nextModule = 1;
  std::uint64_t m_nextKernel = 1;
  AllocationTable m_globals;
  bool m_haveLimits = false;
  cudaDeviceProp m_limits{};
};

}  // namespace flyt::backend
