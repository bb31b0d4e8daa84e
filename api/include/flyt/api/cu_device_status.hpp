// What a driver session's worker tells the application about a device's changing state, on each
// flytGetDeviceStatus call: memory (as the session sees it) and, where the node's GPU reports
// them, utilisation, temperature and power. Flyt's libnvidia-ml.so.1 answers NVML's queries from
// it (interpose/nvml/).
//
// The PCI ids and the driver's version do not change, but only NVML knows them, so they come here.
//
// Wire format: args {i32 device ordinal} -> results {DeviceStatus}. With a memory quota, total is
// the quota, used what the session holds and free what is left of the quota (at most what the GPU
// has free): the session's share is what NVML shows, as a VM's vGPU shows its own framebuffer.
#pragma once

#include <cstdint>
#include <type_traits>

namespace flyt::api::cu {

struct DeviceStatus {
  static constexpr std::uint32_t kUtilization = 1u << 0;  // gpuPercent and memoryPercent are known
  static constexpr std::uint32_t kTemperature = 1u << 1;
  static constexpr std::uint32_t kPower = 1u << 2;
  static constexpr std::uint32_t kPciIds = 1u << 3;         // pciDeviceId and pciSubsystemId
  static constexpr std::uint32_t kDriverVersion = 1u << 4;  // driverVersion

  std::uint64_t totalBytes = 0;
  std::uint64_t freeBytes = 0;
  std::uint64_t usedBytes = 0;
  std::uint32_t known = 0;  // which of the fields below hold a reading (the bits above)
  std::uint32_t gpuPercent = 0;
  std::uint32_t memoryPercent = 0;
  std::uint32_t temperatureCelsius = 0;
  std::uint32_t powerMilliwatts = 0;
  std::uint32_t pciDeviceId = 0;  // device id << 16 | vendor id, as PCI configuration space has it
  std::uint32_t pciSubsystemId = 0;
  std::uint32_t reserved = 0;
  char driverVersion[32] = {};  // the node's kernel driver, "580.95.05"
};

static_assert(std::is_trivially_copyable_v<DeviceStatus> && sizeof(DeviceStatus) == 88);

}  // namespace flyt::api::cu
