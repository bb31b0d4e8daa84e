#include "unsupported.hpp"

#include "client.hpp"
#include "flyt/transport/log.hpp"

#include <mutex>
#include <set>
#include <string>

namespace flyt::interpose {
namespace {

spdlog::logger& log() { return flyt::logger("interpose"); }

}  // namespace

cudaError_t reportUnsupported(const char* name) noexcept {
  try {
    // Function-local statics: a stub may run from another library's constructor, before ours are
    // guaranteed to exist. Leaked on purpose so that calls from atexit handlers stay valid.
    static auto* const mutex = new std::mutex;
    static auto* const reported = new std::set<std::string, std::less<>>;
    bool first = false;
    {
      std::lock_guard lock(*mutex);
      first = reported->emplace(name).second;
    }
    if (first) log().warn("{} is not supported by Flyt; returning cudaErrorNotSupported", name);
  } catch (...) {
    // Out of memory or a broken log sink: the caller still gets its error code.
  }
  // As NVIDIA's runtime does for every failing call: the thread's last error.
  setLastError(cudaErrorNotSupported);
  return cudaErrorNotSupported;
}

}  // namespace flyt::interpose
