// The modules (fatbins), kernels and module variables of one session, on the worker: the other side
// of interpose/src/register_fatbin.cpp, launch_kernel.cpp and symbols.cpp (wire formats there).
//
// Modules and kernels are named on the wire by ids this cache hands out (1, 2, ...), never by the
// runtime's handles, so a client can only reach what its own session loaded. Every launch is
// checked here before it reaches the executor: known kernel, parameter block of the kernel's exact
// size, grid and block within the device's limits. One cache per session, used by one thread.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <expected>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "allocation_table.hpp"
#include "flyt/backend/executor.hpp"

namespace flyt::backend {

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

  explicit ModuleCache(Executor& executor) : m_executor(executor) {}
  ~ModuleCache();  // unloads every module
  ModuleCache(const ModuleCache&) = delete;
  ModuleCache& operator=(const ModuleCache&) = delete;

  // One chunk [offset, offset + chunk.size()) of a fatbin of `total` bytes named `hash`. Chunks come
  // in order. Returns the module id after the last chunk (the same id again for an image this
  // session already loaded), 0 before it.
  [[nodiscard]] Result<std::uint64_t> receive(std::uint64_t hash, std::uint64_t total, std::uint64_t offset,
                                              std::span<const std::byte> chunk);

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
  Result<void> checkGeometry(dim3 grid, dim3 block);

  Executor& m_executor;
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
