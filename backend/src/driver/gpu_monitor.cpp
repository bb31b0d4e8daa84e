#include "gpu_monitor.hpp"

#include <dlfcn.h>

#include <mutex>
#include <string>

#include "flyt/api/nvml_abi.h"
#include "flyt/transport/log.hpp"

namespace flyt::backend::cu {
namespace {

// NVIDIA's NVML, as far as the worker reads it.
struct Nvml {
  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*byPciBusId)(const char*, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*memory)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
  nvmlReturn_t (*utilization)(nvmlDevice_t, nvmlUtilization_t*) = nullptr;
  nvmlReturn_t (*temperature)(nvmlDevice_t, nvmlTemperatureSensors_t, unsigned*) = nullptr;
  nvmlReturn_t (*power)(nvmlDevice_t, unsigned*) = nullptr;
  nvmlReturn_t (*pciInfo)(nvmlDevice_t, nvmlPciInfo_t*) = nullptr;
  nvmlReturn_t (*driverVersion)(char*, unsigned) = nullptr;
};

const Nvml* open() {
  void* library = ::dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) return nullptr;
  // Flyt's own NVML answers from a session; a worker must read the GPU itself.
  if (::dlsym(library, "flytNvmlIdentity") != nullptr) {
    flyt::logger("worker").warn("the libnvidia-ml.so.1 this worker found is Flyt's: GPU readings are not served");
    return nullptr;
  }
  auto* nvml = new Nvml();  // process-wide, kept until the process ends
  nvml->init = reinterpret_cast<decltype(nvml->init)>(::dlsym(library, "nvmlInit_v2"));
  nvml->byPciBusId = reinterpret_cast<decltype(nvml->byPciBusId)>(::dlsym(library, "nvmlDeviceGetHandleByPciBusId_v2"));
  nvml->memory = reinterpret_cast<decltype(nvml->memory)>(::dlsym(library, "nvmlDeviceGetMemoryInfo"));
  nvml->utilization = reinterpret_cast<decltype(nvml->utilization)>(::dlsym(library, "nvmlDeviceGetUtilizationRates"));
  nvml->temperature = reinterpret_cast<decltype(nvml->temperature)>(::dlsym(library, "nvmlDeviceGetTemperature"));
  nvml->power = reinterpret_cast<decltype(nvml->power)>(::dlsym(library, "nvmlDeviceGetPowerUsage"));
  nvml->pciInfo = reinterpret_cast<decltype(nvml->pciInfo)>(::dlsym(library, "nvmlDeviceGetPciInfo_v3"));
  nvml->driverVersion = reinterpret_cast<decltype(nvml->driverVersion)>(::dlsym(library, "nvmlSystemGetDriverVersion"));
  if (nvml->init == nullptr || nvml->byPciBusId == nullptr || nvml->memory == nullptr || nvml->init() != NVML_SUCCESS) {
    flyt::logger("worker").warn("NVIDIA's NVML did not initialise: GPU readings are not served");
    delete nvml;
    return nullptr;
  }
  return nvml;
}

}  // namespace

std::optional<api::cu::DeviceStatus> readGpu(std::string_view pciBusId) {
  static std::once_flag once;
  static const Nvml* nvml = nullptr;
  std::call_once(once, [] { nvml = open(); });
  if (nvml == nullptr) return std::nullopt;
  const std::string busId(pciBusId);
  nvmlDevice_t device = nullptr;
  if (nvml->byPciBusId(busId.c_str(), &device) != NVML_SUCCESS) return std::nullopt;
  nvmlMemory_t memory{};
  if (nvml->memory(device, &memory) != NVML_SUCCESS) return std::nullopt;
  api::cu::DeviceStatus status;
  status.totalBytes = memory.total;
  status.freeBytes = memory.free;
  status.usedBytes = memory.used;
  nvmlUtilization_t utilization{};
  if (nvml->utilization != nullptr && nvml->utilization(device, &utilization) == NVML_SUCCESS) {
    status.known |= api::cu::DeviceStatus::kUtilization;
    status.gpuPercent = utilization.gpu;
    status.memoryPercent = utilization.memory;
  }
  if (nvml->temperature != nullptr &&
      nvml->temperature(device, NVML_TEMPERATURE_GPU, &status.temperatureCelsius) == NVML_SUCCESS) {
    status.known |= api::cu::DeviceStatus::kTemperature;
  }
  if (nvml->power != nullptr && nvml->power(device, &status.powerMilliwatts) == NVML_SUCCESS) {
    status.known |= api::cu::DeviceStatus::kPower;
  }
  nvmlPciInfo_t pci{};
  if (nvml->pciInfo != nullptr && nvml->pciInfo(device, &pci) == NVML_SUCCESS) {
    status.known |= api::cu::DeviceStatus::kPciIds;
    status.pciDeviceId = pci.pciDeviceId;
    status.pciSubsystemId = pci.pciSubSystemId;
  }
  if (nvml->driverVersion != nullptr &&
      nvml->driverVersion(status.driverVersion, sizeof status.driverVersion) == NVML_SUCCESS) {
    status.driverVersion[sizeof status.driverVersion - 1] = '\0';
    status.known |= api::cu::DeviceStatus::kDriverVersion;
  }
  return status;
}

}  // namespace flyt::backend::cu
