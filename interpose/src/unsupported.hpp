// The one path every CUDA runtime function without a Flyt implementation takes (generated stubs in
// the build tree: unsupported_stubs.cpp, from api/cudart.toml).
#pragma once

#include <driver_types.h>

namespace flyt::interpose {

// Logs "<name> is not supported by Flyt" as a warning, once per name for the life of the process
// (further calls with the same name log nothing), and returns cudaErrorNotSupported.
// `name` must be NUL-terminated; it is copied. Thread-safe; callable before main() and during exit;
// never throws (a failure to log is swallowed: the application's call must still get its answer).
cudaError_t reportUnsupported(const char* name) noexcept;

}  // namespace flyt::interpose
