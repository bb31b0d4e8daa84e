#include "driver_loader.hpp"

#include <dlfcn.h>
#include <fmt/format.h>

#include <cstring>
#include <mutex>

#include "flyt/api/cu_identity.hpp"
#include "flyt/transport/log.hpp"

namespace flyt::backend::cu {
namespace {

transport::Result<const api::cu::DriverTable*> load() {
  void* library = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* why = ::dlerror();
    return transport::fail(transport::Errc::kUnavailable,
                           fmt::format("the CUDA driver libcuda.so.1 did not load: {}", why != nullptr ? why : "?"));
  }
  auto* table = new api::cu::DriverTable();  // process-wide, kept until the process ends
#define FLYT_LOAD(name) table->name = reinterpret_cast<decltype(table->name)>(::dlsym(library, #name));
  FLYT_CU_DRIVER_FUNCTIONS(FLYT_LOAD)
#undef FLYT_LOAD
  if (table->cuInit == nullptr || table->cuGetExportTable == nullptr) {
    return transport::fail(transport::Errc::kUnavailable, "libcuda.so.1 lacks cuInit or cuGetExportTable");
  }
  CUuuid identity;
  std::memcpy(identity.bytes, api::cu::kFlytIdentityUuid, sizeof identity.bytes);
  const void* flyt = nullptr;
  if (table->cuGetExportTable(&flyt, &identity) == CUDA_SUCCESS && flyt != nullptr) {
    Dl_info info{};
    ::dladdr(reinterpret_cast<void*>(table->cuInit), &info);
    return transport::fail(transport::Errc::kUnavailable,
                           fmt::format("the libcuda.so.1 this worker found ({}) is Flyt's, not NVIDIA's driver: "
                                       "remove Flyt's lib/driver directory from the worker's LD_LIBRARY_PATH "
                                       "and LD_PRELOAD", info.dli_fname != nullptr ? info.dli_fname : "?"));
  }
  if (CUresult error = table->cuInit(0); error != CUDA_SUCCESS) {
    const char* name = nullptr;
    if (table->cuGetErrorName != nullptr) (void)table->cuGetErrorName(error, &name);
    return transport::fail(transport::Errc::kUnavailable,
                           fmt::format("cuInit failed: {}", name != nullptr ? name : std::to_string(error)));
  }
  int count = 0;
  if (table->cuDeviceGetCount == nullptr || table->cuDeviceGetCount(&count) != CUDA_SUCCESS || count == 0) {
    return transport::fail(transport::Errc::kUnavailable, "the CUDA driver sees no device");
  }
  return table;
}

}  // namespace

transport::Result<const api::cu::DriverTable*> loadNvidiaDriver() {
  static std::once_flag once;
  static transport::Result<const api::cu::DriverTable*> loaded =
      transport::fail(transport::Errc::kUnavailable, "not loaded");
  std::call_once(once, [] { loaded = load(); });
  return loaded;
}

}  // namespace flyt::backend::cu
