// What the files of the driver library call in each other (one concern per file; the exported
// functions themselves are declared by cuda.h).
#pragma once

#include <cuda.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "flyt/api/codec.hpp"
#include "flyt/api/cu_device_status.hpp"

namespace flyt::interpose::cu {

// The arguments of a call made of 64-bit values, in order (the wire of the VMM and managed-memory calls).
template <class... Values>
[[nodiscard]] std::vector<std::byte> pack(Values... values) {
  std::vector<std::byte> args;
  api::ArgWriter writer(args);
  (writer.put(static_cast<std::uint64_t>(values)), ...);
  return args;
}

// contexts.cpp: the id of `device`'s primary context, asking the worker the first time; neither
// retains it nor makes it current (what the runtime's export table asks for).
[[nodiscard]] CUresult primaryContext(CUdevice device, CUcontext* context) noexcept;

// modules.cpp: loads a module image (a fatbin, a cubin ELF or PTX text; its size is read from the
// image) into the current context, uploading it unless the worker has it already.
[[nodiscard]] CUresult loadModuleImage(CUmodule* module, const void* image) noexcept;

// modules.cpp: reads a layout as the worker sends it ({u32 count, u32 bytes, count x {u32 offset,
// u32 size}}, count 0xffffffff: unknown) and records it for `handle`; false when malformed.
[[nodiscard]] bool readLayout(api::ArgReader& reader, std::uint64_t handle) noexcept;
// modules.cpp: asks the worker again for the layout of `handle` (flytGetParamLayout), for a kernel
// whose lookup came before any context was current; records it when known.
[[nodiscard]] CUresult refreshLayout(std::uint64_t handle) noexcept;

// device.cpp: what cuDriverGetVersion answers (the worker's driver, capped at this build's CUDA).
[[nodiscard]] int driverVersion() noexcept;

// device.cpp: memory, utilisation, temperature and power of `device` as the worker reads them now
// (flytGetDeviceStatus); what Flyt's libnvidia-ml.so.1 asks through the identity export table.
[[nodiscard]] CUresult deviceStatus(int device, api::cu::DeviceStatus* status) noexcept;

// launch.cpp: a kernel's packed parameter block, from `extra` as given or from kernelParams by the
// layout that came back with the function's lookup.
[[nodiscard]] CUresult packParams(CUfunction f, void** kernelParams, void** extra, std::vector<std::byte>& block) noexcept;

// driver_client.cpp: prints the session's call counts to stderr (FLYT_CALL_COUNTS, at exit).
void reportCallCounts() noexcept;

// managed_memory.cpp: gives every host-resident chunk of managed memory back to the device (a
// dirty one is written back first) and notes that the device may have written every managed
// range since. DriverCall's constructor calls it before it takes the session, whenever
// DriverState::managedHandBackDue() is set; on a thread already inside managed-memory code (its
// own calls, the page-fault handler's) it does nothing.
void handBackManagedMemory() noexcept;

// managed_memory.cpp: the unit in which managed memory moves between host and device (and in which
// managed_advice.cpp records advice).
inline constexpr std::size_t kManagedChunkBytes = std::size_t{64} << 10;

// managed_memory.cpp: makes the device-owned chunks of managed memory in [address, address + bytes)
// host-resident now (a prefetch to the host); CUDA_ERROR_INVALID_VALUE outside managed memory.
[[nodiscard]] CUresult fetchManagedToHost(CUdeviceptr address, std::size_t bytes) noexcept;

// managed_advice.cpp: forgets the advice recorded for the managed range at `base` (it was freed).
void forgetManagedAdvice(CUdeviceptr base) noexcept;

// unsupported.cpp: logs "<name> is not supported by Flyt" once per name; CUDA_ERROR_NOT_SUPPORTED.
int reportUnsupported(const char* name) noexcept;

}  // namespace flyt::interpose::cu
