// libflyt-dlopen.so: keeps NVIDIA's driver out of a Flyt application's process. `flyt run --api
// driver` preloads it with Flyt's libcuda.so.1 and libnvidia-ml.so.1; its dlopen() answers a
// request for NVIDIA's driver or NVML *by path* (/usr/lib/x86_64-linux-gnu/libcuda.so.1, a CUDA
// toolkit's compat/ directory, a framework's own search) with Flyt's library of the same name, so
// that no library of the program can reach the GPU past Flyt. Requests by soname need nothing: the
// preloaded library already answers to it. Every other request goes to the C library unchanged.
// One line is logged per redirected path.
#include <dlfcn.h>
#include <pthread.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace {

using DlopenFn = void* (*)(const char*, int);

DlopenFn realDlopen() {
  static const DlopenFn real = reinterpret_cast<DlopenFn>(::dlsym(RTLD_NEXT, "dlopen"));
  return real;
}

// The directory this library was loaded from, where Flyt's driver libraries are.
const std::string& ownDirectory() {
  static const std::string directory = [] {
    Dl_info info{};
    if (::dladdr(reinterpret_cast<void*>(&ownDirectory), &info) == 0 || info.dli_fname == nullptr) return std::string();
    std::string path = info.dli_fname;
    const auto slash = path.rfind('/');
    return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
  }();
  return directory;
}

// "libcuda.so", "libcuda.so.1", "libcuda.so.580.95.05", ... -> "libcuda.so.1"; else empty.
std::string_view flytNameFor(std::string_view base) {
  for (std::string_view stem : {"libcuda.so", "libnvidia-ml.so"}) {
    if (base.substr(0, stem.size()) != stem) continue;
    const std::string_view rest = base.substr(stem.size());
    if (!rest.empty() && rest.find_first_not_of(".0123456789") != std::string_view::npos) continue;
    return stem == "libcuda.so" ? "libcuda.so.1" : "libnvidia-ml.so.1";
  }
  return {};
}

}  // namespace

extern "C" __attribute__((visibility("default"))) void* dlopen(const char* file, int mode) {
  DlopenFn real = realDlopen();
  if (real == nullptr) return nullptr;
  if (file != nullptr && std::strchr(file, '/') != nullptr && !ownDirectory().empty()) {
    const std::string_view path(file);
    const std::string_view flyt = flytNameFor(path.substr(path.rfind('/') + 1));
    if (!flyt.empty()) {
      const std::string ours = ownDirectory() + "/" + std::string(flyt);
      if (path != ours) {
        std::fprintf(stderr, "[flyt.interpose] [info] dlopen(\"%s\") answered with Flyt's %s (NVIDIA's driver stays out "
                     "of a Flyt application)\n", file, ours.c_str());
        return real(ours.c_str(), mode);
      }
    }
  }
  return real(file, mode);
}
