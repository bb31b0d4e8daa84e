// Device queries, answered from the snapshot the worker sends once per session (cu_device_snapshot.hpp):
// NVIDIA's runtime makes a hundred or more of them per device at start-up, none costs a round trip.
#include <cuda.h>
#include <strings.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

#include "driver_client.hpp"
#include "driver_internal.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {
namespace {

// The device record, after connecting; sets `error` when there is none.
const api::cu::DeviceInfo* deviceOrError(CUdevice device, CUresult& error) noexcept {
  error = DriverState::get().init();
  if (error != CUDA_SUCCESS) return nullptr;
  const auto* info = DriverState::get().device(device);
  if (info == nullptr) error = CUDA_ERROR_INVALID_DEVICE;
  return info;
}

// What managed memory through Flyt is (managed_memory.cpp), whatever the worker's GPU can do:
// supported, but never accessed by host and device at once, and pageable host memory is not
// device-accessible (the device is in another process).
std::optional<int> managedAttribute(CUdevice_attribute attribute) noexcept {
  switch (attribute) {
    case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY: return 1;
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS:
    case CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS:
    case CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES:
    case CU_DEVICE_ATTRIBUTE_HOST_NATIVE_ATOMIC_SUPPORTED:
    case CU_DEVICE_ATTRIBUTE_DIRECT_MANAGED_MEM_ACCESS_FROM_HOST: return 0;
    default: return std::nullopt;
  }
}

}  // namespace

int driverVersion() noexcept {
  if (DriverState::get().init() != CUDA_SUCCESS) return CUDA_VERSION;
  const auto* snapshot = DriverState::get().devices();
  return std::min(snapshot->driverVersion, CUDA_VERSION);
}

CUresult deviceStatus(int device, api::cu::DeviceStatus* status) noexcept {
  if (status == nullptr) return CUDA_ERROR_INVALID_VALUE;
  CUresult error;
  if (deviceOrError(device, error) == nullptr) return error;
  std::vector<std::byte> args;
  api::ArgWriter(args).put(static_cast<std::int32_t>(device));
  DriverCall call;
  auto outcome = call.call(Method::flytGetDeviceStatus, args);
  if (outcome.error != CUDA_SUCCESS) return outcome.error;
  api::ArgReader reader(outcome.results);
  if (!reader.get(*status) || !reader.exhausted()) return CUDA_ERROR_UNKNOWN;
  return CUDA_SUCCESS;
}

}  // namespace flyt::interpose::cu

using namespace flyt::interpose::cu;
namespace api = flyt::api;

FLYT_CU_EXPORT CUresult cuDeviceGetCount(int* count) {
  if (count == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  *count = static_cast<int>(DriverState::get().devices()->deviceCount);
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuDeviceGet(CUdevice* device, int ordinal) {
  if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
  CUresult error;
  if (deviceOrError(ordinal, error) == nullptr) return error;
  *device = ordinal;
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuDeviceGetName(char* name, int len, CUdevice dev) {
  if (name == nullptr || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  CUresult error;
  const auto* info = deviceOrError(dev, error);
  if (info == nullptr) return error;
  const std::string_view text(info->name, strnlen(info->name, sizeof info->name));
  const std::size_t bytes = std::min(text.size(), static_cast<std::size_t>(len) - 1);
  std::memcpy(name, text.data(), bytes);
  name[bytes] = '\0';
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice dev) {
  if (bytes == nullptr) return CUDA_ERROR_INVALID_VALUE;
  CUresult error;
  const auto* info = deviceOrError(dev, error);
  if (info == nullptr) return error;
  *bytes = info->totalMemory;
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuDeviceGetAttribute(int* pi, CUdevice_attribute attrib, CUdevice dev) {
  if (pi == nullptr || attrib <= 0 || static_cast<std::uint32_t>(attrib) >= api::cu::kAttributeSlots) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  CUresult error;
  const auto* info = deviceOrError(dev, error);
  if (info == nullptr) return error;
  if (const auto managed = managedAttribute(attrib)) {
    *pi = *managed;
    return CUDA_SUCCESS;
  }
  if (info->attributeResults[attrib] != CUDA_SUCCESS) return static_cast<CUresult>(info->attributeResults[attrib]);
  *pi = info->attributes[attrib];
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuDeviceGetUuid_v2(CUuuid* uuid, CUdevice dev) {
  if (uuid == nullptr) return CUDA_ERROR_INVALID_VALUE;
  CUresult error;
  const auto* info = deviceOrError(dev, error);
  if (info == nullptr) return error;
  *uuid = info->uuid;
  return CUDA_SUCCESS;
}

// The same bytes as _v2 (the runtime's integrity check may use either).
FLYT_CU_EXPORT CUresult cuDeviceGetUuid(CUuuid* uuid, CUdevice dev) { return cuDeviceGetUuid_v2(uuid, dev); }

FLYT_CU_EXPORT CUresult cuDeviceGetPCIBusId(char* pciBusId, int len, CUdevice dev) {
  if (pciBusId == nullptr || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  CUresult error;
  const auto* info = deviceOrError(dev, error);
  if (info == nullptr) return error;
  std::snprintf(pciBusId, static_cast<std::size_t>(len), "%s", info->pciBusId);
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuDeviceGetByPCIBusId(CUdevice* dev, const char* pciBusId) {
  if (dev == nullptr || pciBusId == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  const auto* snapshot = DriverState::get().devices();
  for (std::uint32_t i = 0; i < snapshot->deviceCount; ++i) {
    const auto* info = DriverState::get().device(static_cast<CUdevice>(i));
    if (strncasecmp(info->pciBusId, pciBusId, sizeof info->pciBusId) == 0 ||
        // "00:04.0" names the same device as "0000:00:04.0"
        (std::strlen(pciBusId) + 5 == std::strlen(info->pciBusId) && strcasecmp(info->pciBusId + 5, pciBusId) == 0)) {
      *dev = static_cast<CUdevice>(i);
      return CUDA_SUCCESS;
    }
  }
  return CUDA_ERROR_INVALID_DEVICE;
}

FLYT_CU_EXPORT CUresult cuDeviceComputeCapability(int* major, int* minor, CUdevice dev) {
  if (major == nullptr || minor == nullptr) return CUDA_ERROR_INVALID_VALUE;
  CUresult error;
  const auto* info = deviceOrError(dev, error);
  if (info == nullptr) return error;
  *major = info->attributes[CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR];
  *minor = info->attributes[CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR];
  return CUDA_SUCCESS;
}

FLYT_CU_EXPORT CUresult cuDeviceGetProperties(CUdevprop* prop, CUdevice dev) {
  if (prop == nullptr) return CUDA_ERROR_INVALID_VALUE;
  CUresult error;
  const auto* info = deviceOrError(dev, error);
  if (info == nullptr) return error;
  const auto* a = info->attributes;
  prop->maxThreadsPerBlock = a[CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK];
  prop->maxThreadsDim[0] = a[CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X];
  prop->maxThreadsDim[1] = a[CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y];
  prop->maxThreadsDim[2] = a[CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z];
  prop->maxGridSize[0] = a[CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X];
  prop->maxGridSize[1] = a[CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y];
  prop->maxGridSize[2] = a[CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z];
  prop->sharedMemPerBlock = a[CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK];
  prop->totalConstantMemory = a[CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY];
  prop->SIMDWidth = a[CU_DEVICE_ATTRIBUTE_WARP_SIZE];
  prop->memPitch = a[CU_DEVICE_ATTRIBUTE_MAX_PITCH];
  prop->regsPerBlock = a[CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK];
  prop->clockRate = a[CU_DEVICE_ATTRIBUTE_CLOCK_RATE];
  prop->textureAlign = a[CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT];
  return CUDA_SUCCESS;
}
