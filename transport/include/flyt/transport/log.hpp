// One spdlog logger per component ("transport", "shm", "tcp", "region", "interpose", "worker", ...),
// all writing to stderr (never the application's stdout), named "flyt.<component>". The level
// comes from FLYT_LOG once per process: trace, debug, info, warn (default), error, critical, off.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace flyt {

// Returns the component's logger, creating it on first use. Thread-safe; the reference stays valid
// for the life of the process.
[[nodiscard]] spdlog::logger& logger(std::string_view component);

}  // namespace flyt
