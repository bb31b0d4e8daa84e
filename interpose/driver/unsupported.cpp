#include "unsupported.hpp"

#include <cuda.h>

#include <mutex>
#include <set>
#include <string>

#include "flyt/transport/log.hpp"

namespace flyt::interpose::cu {

int reportUnsupported(const char* name) noexcept {
  try {
    // Leaked function-local statics: a stub may run from another library's constructor or from an
    // atexit handler.
    static auto* const mutex = new std::mutex;
    static auto* const reported = new std::set<std::string, std::less<>>;
    bool first = false;
    {
      std::lock_guard lock(*mutex);
      first = reported->emplace(name).second;
    }
    if (first) flyt::logger("interpose").warn("{} is not supported by Flyt; returning CUDA_ERROR_NOT_SUPPORTED", name);
  } catch (...) {
    // The caller still gets its error code.
  }
  return CUDA_ERROR_NOT_SUPPORTED;
}

}  // namespace flyt::interpose::cu
