// Flyt's own private export table of its libcuda.so.1, asked for by UUID through cuGetExportTable
// as NVIDIA's libraries ask for theirs. It tells Flyt's driver library apart from NVIDIA's (a
// worker refuses to serve a session through Flyt's: backend/src/driver/driver_loader.cpp), and it
// is how Flyt's libnvidia-ml.so.1 reaches the process's session (interpose/nvml/).
#pragma once

#include <cuda.h>

#include <cstddef>
#include <cstdint>

#include "flyt/api/cu_device_status.hpp"

namespace flyt::api::cu {

inline constexpr unsigned char kFlytIdentityUuid[16] = {'F', 'l', 'y', 't', ' ', 'l', 'i', 'b',
                                                        'c', 'u', 'd', 'a', '.', 's', 'o', '1'};

// The table's layout. Fields are only ever added at the end; `bytes` says how many the library has.
struct FlytIdentityTable {
  std::size_t bytes = sizeof(FlytIdentityTable);
  // flytGetDeviceStatus for device `ordinal` (connecting first if need be).
  CUresult (*deviceStatus)(int ordinal, DeviceStatus* status) noexcept = nullptr;
  // What the process's session has sent so far: forwarded calls, calls waited for (round trips),
  // messages. A C signature: flytbench's PyTorch script reads it through ctypes.
  void (*callCounts)(std::uint64_t* calls, std::uint64_t* waited, std::uint64_t* messages) noexcept = nullptr;
};

}  // namespace flyt::api::cu
