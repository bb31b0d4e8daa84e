// What a driver session's worker tells the application about its devices, once, in the reply to
// flytGetDevices: everything the driver answers about a device that cannot change while the
// session lives, so that the hundreds of queries NVIDIA's runtime and libraries make at start-up
// (cuDeviceGetAttribute above all) cost no round trip.
//
// Wire format (the call's results): a DeviceSnapshot, then `deviceCount` DeviceInfo records. The
// worker fills them from its driver, with the session's share applied (totalMemory is the memory
// quota; the multiprocessor count is the granted SMs). The client checks the sizes before it reads.
#pragma once

#include <cuda.h>

#include <cstdint>
#include <type_traits>

namespace flyt::api::cu {

// Attributes are indexed by their CUdevice_attribute value.
inline constexpr std::uint32_t kAttributeSlots = CU_DEVICE_ATTRIBUTE_MAX;
inline constexpr std::uint32_t kMaxDevices = 16;

struct DeviceSnapshot {
  std::uint32_t deviceCount = 0;
  std::int32_t driverVersion = 0;  // what cuDriverGetVersion answers (capped at the client's toolkit)
};

struct DeviceInfo {
  char name[256] = {};
  CUuuid uuid = {};
  char pciBusId[32] = {};  // "0000:00:00.0"
  std::uint64_t totalMemory = 0;
  std::int32_t attributes[kAttributeSlots] = {};
  std::int32_t attributeResults[kAttributeSlots] = {};  // the CUresult of each query (0: answered)
};

static_assert(std::is_trivially_copyable_v<DeviceSnapshot> && sizeof(DeviceSnapshot) == 8);
static_assert(std::is_trivially_copyable_v<DeviceInfo>);
static_assert(sizeof(DeviceInfo) == 256 + 16 + 32 + 8 + 8 * kAttributeSlots);

}  // namespace flyt::api::cu
