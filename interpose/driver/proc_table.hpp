// cuGetProcAddress's table: every export of the driver by the name and CUDA version it is asked
// for (cu_procs.inc, generated from cudaTypedefs.h and api/cuda.toml's [[proc]] rows).
#pragma once

#include <string_view>

namespace flyt::interpose::cu {

struct ProcLookup {
  void* address = nullptr;  // null: no variant fits
  bool named = false;       // the name is a driver function (only newer versions than asked exist)
};

// The newest variant of `symbol` introduced at or before `cudaVersion`; with `perThread`, its
// per-thread-default-stream export where it has one, else the legacy one.
[[nodiscard]] ProcLookup lookupProc(std::string_view symbol, int cudaVersion, bool perThread) noexcept;

}  // namespace flyt::interpose::cu
