#include "unsupported.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <mutex>
#include <set>
#include <string>

namespace flyt::interpose {
namespace {

// TODO(forwarding): use flyt::logger("interpose") (transport/include/flyt/transport/log.hpp: stderr,
// level from FLYT_LOG) once flyt::interpose links flyt::transport; until then a stderr logger of the
// same name, at spdlog's default level, so that warnings are never lost.
spdlog::logger& log() {
  static const std::shared_ptr<spdlog::logger> logger = [] {
    if (auto existing = spdlog::get("flyt.interpose")) return existing;
    return spdlog::stderr_color_mt("flyt.interpose");
  }();
  return *logger;
}

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
  // TODO(forwarding): record cudaErrorNotSupported as this thread's last error (cudaGetLastError /
  // cudaPeekAtLastError) once the client's error state exists; NVIDIA's runtime does that for
  // every failing call.
  return cudaErrorNotSupported;
}

}  // namespace flyt::interpose
