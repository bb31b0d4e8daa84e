// What nvcc's start-up code registered in this process: fatbins, kernels (host stub -> device name)
// and variables (host shadow -> device name), and what the session has learnt about them (module
// ids, kernel ids and parameter layouts, device addresses of variables). register_fatbin.cpp fills
// it at load time; launch_kernel.cpp and symbols.cpp resolve entries through the worker on first use.
//
// Threading: every member is guarded by `mutex`; resolution happens under it, so two threads that
// launch the same kernel first upload its fatbin once. Records live until their fatbin is
// unregistered (at exit, or at dlclose of a library holding kernels).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace flyt::interpose {

struct FatbinRecord {
  // The handle handed to nvcc's code is &self (a void** that points here); nvcc never dereferences it.
  void* self = nullptr;
  std::span<const std::byte> image;  // empty when the wrapper was malformed
  std::string problem;               // why the image is unusable, for the error log
  std::uint64_t moduleId = 0;        // the worker's id for the loaded image; 0 until the first use
};

struct KernelParam {
  std::uint32_t offset = 0;
  std::uint32_t size = 0;
};

struct FunctionRecord {
  FatbinRecord* fatbin = nullptr;
  std::string deviceName;
  std::uint64_t kernelId = 0;  // 0 until resolved
  cudaError_t failure = cudaSuccess;  // why resolving failed, so later launches fail without asking
  std::vector<KernelParam> params;
  std::size_t paramBytes = 0;  // the packed buffer's size: max(offset + size)
};

struct VarRecord {
  FatbinRecord* fatbin = nullptr;
  std::string deviceName;
  std::size_t size = 0;
  bool constant = false;
  std::uint64_t deviceAddress = 0;  // 0 until resolved
};

struct Registry {
  std::mutex mutex;
  std::map<void**, std::unique_ptr<FatbinRecord>> fatbins;
  std::map<const void*, FunctionRecord> functions;  // by host stub address (= the cudaKernel_t we hand out)
  std::map<const void*, VarRecord> variables;       // by host shadow address
};

// The process's registry (leaked on purpose: registrations and launches may come from other
// libraries' constructors and destructors).
[[nodiscard]] Registry& registry() noexcept;

// Makes sure `fatbin` is loaded in this session and returns its module id, uploading it on first use
// (a sync call). Call with registry().mutex held.
[[nodiscard]] cudaError_t loadedModule(FatbinRecord& fatbin, std::uint64_t* moduleId) noexcept;

// The session's id of the kernel registered for `func` (a host stub, or the handle __cudaGetKernel
// gave out), loading its module and looking it up on first use (sync calls). Takes registry().mutex.
[[nodiscard]] cudaError_t kernelIdOf(const void* func, std::uint64_t* kernelId) noexcept;

// cudaDeviceReset: forgets what the session learnt (module and kernel ids, layouts, lookup failures,
// variable addresses), so that the next use loads and looks up again. Takes registry().mutex.
void forgetSession() noexcept;

}  // namespace flyt::interpose
