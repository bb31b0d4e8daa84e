// The readings of a GPU that change while a session runs (memory in use, utilisation, temperature,
// power), from NVIDIA's management library on the node, for flytGetDeviceStatus. Opened once per
// worker, on first use; on a host without NVIDIA's NVML (or with only Flyt's), nothing is read and
// the session's own bookkeeping answers instead (serve_contexts.cpp).
#pragma once

#include <optional>
#include <string_view>

#include "flyt/api/cu_device_status.hpp"

namespace flyt::backend::cu {

// The device at `pciBusId` ("0000:00:00.0", as cuDeviceGetPCIBusId writes it): its memory as the
// whole GPU sees it and whatever else NVML reports (DeviceStatus::known). Empty when NVML is not
// there or does not know the device.
[[nodiscard]] std::optional<api::cu::DeviceStatus> readGpu(std::string_view pciBusId);

}  // namespace flyt::backend::cu
