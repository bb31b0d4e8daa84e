// NVIDIA's CUDA driver as the worker of a driver session uses it: libcuda.so.1 opened by its
// soname, each function of the table (cu_driver_table.hpp) by its exact versioned symbol.
#pragma once

#include "flyt/api/cu_driver_table.hpp"
#include "flyt/transport/error.hpp"

namespace flyt::backend::cu {

// The real driver, initialised (cuInit) with at least one device. kUnavailable when there is no
// driver or no device, or when the libcuda.so.1 found is Flyt's own (the worker's environment names
// Flyt's library directory: it must never serve a session through itself); the message says which.
// Loaded once per process; later calls return the same table.
[[nodiscard]] transport::Result<const api::cu::DriverTable*> loadNvidiaDriver();

}  // namespace flyt::backend::cu
