// The one path every driver export without a Flyt implementation takes (the generated stubs of
// cu_unsupported_stubs.cpp, which include no CUDA header and so see only this declaration).
#pragma once

namespace flyt::interpose::cu {

// Logs "<name> is not supported by Flyt" as a warning, once per name; returns
// CUDA_ERROR_NOT_SUPPORTED (801). Thread-safe, never throws, callable during start-up and exit.
int reportUnsupported(const char* name) noexcept;

}  // namespace flyt::interpose::cu
