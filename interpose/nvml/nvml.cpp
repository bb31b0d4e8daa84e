// Flyt's libnvidia-ml.so.1: NVIDIA's management library (NVML) as far as frameworks and tools ask
// it about a GPU (PyTorch's device count and UUIDs, NCCL's look-ups, nvidia-smi-style monitors):
// device count, names, UUIDs, PCI information, memory, compute capability, utilisation,
// temperature and power. It never talks to a GPU or to NVIDIA's driver: it reaches the process's
// Flyt session through Flyt's libcuda.so.1 (its public device queries, and its identity export
// table for the readings that change: flyt/api/cu_identity.hpp), so what it reports is the
// session's devices, with the session's memory quota as their memory.
//
// What a remoted GPU cannot answer (NVLink, P2P, CPU affinity, clocks now, ECC, persistence mode)
// answers NVML_ERROR_NOT_SUPPORTED, as NVML does for a feature a GPU lacks; functions not exported
// here are absent, which NVML's callers (dlsym, ctypes) handle as an older NVML. The exported list
// is interpose/nvml/libnvidia-ml.map.
#include <cuda.h>
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>

#include "flyt/api/cu_identity.hpp"
#include "flyt/api/nvml_abi.h"
#include "flyt/transport/log.hpp"

#define FLYT_NVML_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

namespace api = flyt::api;

constexpr unsigned kMaxDevices = 16;

// What NVML reports of a device that cannot change, read once from Flyt's libcuda.so.1.
struct DeviceRecord {
  unsigned index = 0;
  char name[NVML_DEVICE_NAME_V2_BUFFER_SIZE] = {};
  char uuid[NVML_DEVICE_UUID_BUFFER_SIZE] = {};  // "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
  unsigned pciDomain = 0, pciBus = 0, pciDevice = 0;
  int major = 0, minor = 0;
  int computeMode = 0;
  int clockKhz = 0, memoryClockKhz = 0;
};

// Flyt's libcuda.so.1, as this library uses it.
struct Driver {
  CUresult (*init)(unsigned) = nullptr;
  CUresult (*driverGetVersion)(int*) = nullptr;
  CUresult (*deviceGetCount)(int*) = nullptr;
  CUresult (*deviceGetName)(char*, int, CUdevice) = nullptr;
  CUresult (*deviceGetUuid)(CUuuid*, CUdevice) = nullptr;
  CUresult (*deviceGetAttribute)(int*, CUdevice_attribute, CUdevice) = nullptr;
  const api::cu::FlytIdentityTable* flyt = nullptr;
};

struct State {
  std::mutex mutex;
  int initCount = 0;     // nvmlInit calls not yet matched by nvmlShutdown
  bool loaded = false;   // driver and devices read (kept across shutdown and init)
  nvmlReturn_t loadResult = NVML_ERROR_UNINITIALIZED;
  Driver driver;
  unsigned deviceCount = 0;
  DeviceRecord devices[kMaxDevices];
};

State& state() {
  static State s;
  return s;
}

spdlog::logger& log() { return flyt::logger("nvml"); }

template <class Fn>
bool bind(void* library, const char* name, Fn*& fn) {
  fn = reinterpret_cast<Fn*>(::dlsym(library, name));
  return fn != nullptr;
}

void formatUuid(const CUuuid& id, char* out) {
  const auto* b = reinterpret_cast<const unsigned char*>(id.bytes);
  std::snprintf(out, NVML_DEVICE_UUID_BUFFER_SIZE,
                "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
                b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

// Finds Flyt's libcuda.so.1 (the one `flyt run` preloads) and reads the devices. Called with the
// state's lock held.
nvmlReturn_t load(State& s) {
  void* library = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (library == nullptr) {
    const char* why = ::dlerror();
    log().error("Flyt's libnvidia-ml.so.1 needs Flyt's libcuda.so.1, which did not load: {} (run the program "
                "with `flyt run --api driver`)", why != nullptr ? why : "?");
    return NVML_ERROR_DRIVER_NOT_LOADED;
  }
  Driver d;
  CUresult (*getExportTable)(const void**, const CUuuid*) = nullptr;
  if (!bind(library, "cuGetExportTable", getExportTable) || !bind(library, "cuInit", d.init) ||
      !bind(library, "cuDriverGetVersion", d.driverGetVersion) || !bind(library, "cuDeviceGetCount", d.deviceGetCount) ||
      !bind(library, "cuDeviceGetName", d.deviceGetName) || !bind(library, "cuDeviceGetUuid_v2", d.deviceGetUuid) ||
      !bind(library, "cuDeviceGetAttribute", d.deviceGetAttribute)) {
    log().error("the libcuda.so.1 this process loaded lacks the CUDA driver's device queries");
    return NVML_ERROR_DRIVER_NOT_LOADED;
  }
  CUuuid identity;
  std::memcpy(identity.bytes, api::cu::kFlytIdentityUuid, sizeof identity.bytes);
  const void* table = nullptr;
  if (getExportTable(&table, &identity) != CUDA_SUCCESS || table == nullptr) {
    Dl_info info{};
    ::dladdr(reinterpret_cast<void*>(getExportTable), &info);
    log().error("the libcuda.so.1 this process loaded ({}) is NVIDIA's driver, not Flyt's: Flyt's NVML does not "
                "serve it (run the program with `flyt run --api driver`)",
                info.dli_fname != nullptr ? info.dli_fname : "?");
    return NVML_ERROR_DRIVER_NOT_LOADED;
  }
  d.flyt = static_cast<const api::cu::FlytIdentityTable*>(table);
  if (d.flyt->bytes < sizeof(api::cu::FlytIdentityTable)) {
    log().error("Flyt's libcuda.so.1 in this process is older than its libnvidia-ml.so.1");
    return NVML_ERROR_LIB_RM_VERSION_MISMATCH;
  }
  if (d.init(0) != CUDA_SUCCESS) return NVML_ERROR_DRIVER_NOT_LOADED;  // libcuda logged why
  int count = 0;
  if (d.deviceGetCount(&count) != CUDA_SUCCESS) return NVML_ERROR_DRIVER_NOT_LOADED;
  s.deviceCount = static_cast<unsigned>(std::clamp(count, 0, static_cast<int>(kMaxDevices)));
  for (unsigned i = 0; i < s.deviceCount; ++i) {
    auto& r = s.devices[i];
    const auto dev = static_cast<CUdevice>(i);
    r.index = i;
    CUuuid uuid{};
    if (d.deviceGetName(r.name, sizeof r.name, dev) != CUDA_SUCCESS || d.deviceGetUuid(&uuid, dev) != CUDA_SUCCESS) {
      return NVML_ERROR_UNKNOWN;
    }
    formatUuid(uuid, r.uuid);
    auto attribute = [&](CUdevice_attribute a) {
      int value = 0;
      return d.deviceGetAttribute(&value, a, dev) == CUDA_SUCCESS ? value : 0;
    };
    r.pciDomain = static_cast<unsigned>(attribute(CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID));
    r.pciBus = static_cast<unsigned>(attribute(CU_DEVICE_ATTRIBUTE_PCI_BUS_ID));
    r.pciDevice = static_cast<unsigned>(attribute(CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID));
    r.major = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
    r.minor = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
    r.computeMode = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_MODE);
    r.clockKhz = attribute(CU_DEVICE_ATTRIBUTE_CLOCK_RATE);
    r.memoryClockKhz = attribute(CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE);
  }
  s.driver = d;
  return NVML_SUCCESS;
}

bool initialised() {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  return s.initCount > 0;
}

// The record a handle names; null for a handle this library did not hand out.
const DeviceRecord* record(nvmlDevice_t device) {
  auto& s = state();
  for (unsigned i = 0; i < s.deviceCount; ++i) {
    if (reinterpret_cast<const void*>(&s.devices[i]) == static_cast<const void*>(device)) return &s.devices[i];
  }
  return nullptr;
}

nvmlDevice_t handleOf(const DeviceRecord& r) {
  return reinterpret_cast<nvmlDevice_t>(const_cast<DeviceRecord*>(&r));
}

// Resolves a handle, or says why not.
nvmlReturn_t check(nvmlDevice_t device, const DeviceRecord*& r) {
  if (!initialised()) return NVML_ERROR_UNINITIALIZED;
  r = record(device);
  return r == nullptr ? NVML_ERROR_INVALID_ARGUMENT : NVML_SUCCESS;
}

nvmlReturn_t status(const DeviceRecord& r, api::cu::DeviceStatus& out) {
  const CUresult error = state().driver.flyt->deviceStatus(static_cast<int>(r.index), &out);
  if (error == CUDA_SUCCESS) return NVML_SUCCESS;
  return error == CUDA_ERROR_DEVICE_UNAVAILABLE ? NVML_ERROR_GPU_IS_LOST : NVML_ERROR_UNKNOWN;
}

nvmlReturn_t copyString(const char* text, char* out, unsigned length) {
  if (out == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  const std::size_t bytes = std::strlen(text);
  if (length <= bytes) return NVML_ERROR_INSUFFICIENT_SIZE;
  std::memcpy(out, text, bytes + 1);
  return NVML_SUCCESS;
}

// "00000000:BB:DD.0" (NVML's form: a 32-bit domain) or the legacy "0000:BB:DD.0".
void formatBusId(const DeviceRecord& r, char* out, std::size_t size, bool legacy) {
  std::snprintf(out, size, legacy ? "%04x:%02x:%02x.0" : "%08x:%02x:%02x.0", r.pciDomain, r.pciBus, r.pciDevice);
}

// Parses "[domain:]bus:device[.function]" (hex), as NVML accepts bus ids.
bool parseBusId(const char* text, unsigned& domain, unsigned& bus, unsigned& device) {
  unsigned function = 0;
  domain = 0;
  if (std::sscanf(text, "%x:%x:%x.%x", &domain, &bus, &device, &function) >= 3) return true;
  domain = 0;
  return std::sscanf(text, "%x:%x.%x", &bus, &device, &function) >= 2;
}

nvmlReturn_t processes(nvmlDevice_t device, unsigned* count, void* infos, bool v1) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  if (count == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  // The one process of this session that uses the device: this one, with what it holds.
  api::cu::DeviceStatus now;
  if (auto failed = status(*r, now); failed != NVML_SUCCESS) return failed;
  const unsigned have = *count;
  *count = 1;
  if (have < 1 || infos == nullptr) return NVML_ERROR_INSUFFICIENT_SIZE;
  const auto pid = static_cast<unsigned>(::getpid());
  if (v1) {
    *static_cast<nvmlProcessInfo_v1_t*>(infos) = nvmlProcessInfo_v1_t{pid, now.usedBytes};
  } else {
    *static_cast<nvmlProcessInfo_t*>(infos) = nvmlProcessInfo_t{pid, now.usedBytes, 0xffffffffu, 0xffffffffu};
  }
  return NVML_SUCCESS;
}

}  // namespace

// Present only in Flyt's NVML: a worker that finds this library refuses to read a GPU through it.
FLYT_NVML_EXPORT const char flytNvmlIdentity[] = "Flyt libnvidia-ml.so.1";

// ---- initialisation ---------------------------------------------------------------------------

FLYT_NVML_EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int /*flags*/) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  if (!s.loaded) {
    s.loadResult = load(s);
    s.loaded = s.loadResult == NVML_SUCCESS;
    if (!s.loaded) return s.loadResult;
  }
  ++s.initCount;
  return NVML_SUCCESS;
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlInit_v2() { return nvmlInitWithFlags(0); }
FLYT_NVML_EXPORT nvmlReturn_t nvmlInit() { return nvmlInitWithFlags(0); }

FLYT_NVML_EXPORT nvmlReturn_t nvmlShutdown() {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  if (s.initCount == 0) return NVML_ERROR_UNINITIALIZED;
  --s.initCount;
  return NVML_SUCCESS;
}

FLYT_NVML_EXPORT const char* nvmlErrorString(nvmlReturn_t result) {
  switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    case NVML_ERROR_NO_DATA: return "No data";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    case NVML_ERROR_UNKNOWN: return "Unknown Error";
    default: return "Unknown Error";
  }
}

// ---- system -----------------------------------------------------------------------------------

// The node's kernel driver, as its NVML reports it; without one (the GPU stand-in), the CUDA
// driver version ("13.0").
FLYT_NVML_EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char* version, unsigned int length) {
  if (!initialised()) return NVML_ERROR_UNINITIALIZED;
  auto& s = state();
  api::cu::DeviceStatus now;
  if (s.deviceCount > 0 && status(s.devices[0], now) == NVML_SUCCESS &&
      (now.known & api::cu::DeviceStatus::kDriverVersion) != 0) {
    return copyString(now.driverVersion, version, length);
  }
  int cuda = 0;
  (void)s.driver.driverGetVersion(&cuda);
  char text[32];
  std::snprintf(text, sizeof text, "%d.%d", cuda / 1000, cuda % 1000 / 10);
  return copyString(text, version, length);
}

// NVML's own version follows the CUDA driver's ("13.<driver>"): Flyt says "13.0.flyt".
FLYT_NVML_EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char* version, unsigned int length) {
  if (!initialised()) return NVML_ERROR_UNINITIALIZED;
  int cuda = 0;
  (void)state().driver.driverGetVersion(&cuda);
  char text[32];
  std::snprintf(text, sizeof text, "%d.%d.flyt", cuda / 1000, cuda % 1000 / 10);
  return copyString(text, version, length);
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int* cudaDriverVersion) {
  if (cudaDriverVersion == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  if (!initialised()) return NVML_ERROR_UNINITIALIZED;
  return state().driver.driverGetVersion(cudaDriverVersion) == CUDA_SUCCESS ? NVML_SUCCESS : NVML_ERROR_UNKNOWN;
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int* cudaDriverVersion) {
  return nvmlSystemGetCudaDriverVersion(cudaDriverVersion);
}

// ---- device handles ---------------------------------------------------------------------------

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int* deviceCount) {
  if (deviceCount == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  if (!initialised()) return NVML_ERROR_UNINITIALIZED;
  *deviceCount = state().deviceCount;
  return NVML_SUCCESS;
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int* deviceCount) { return nvmlDeviceGetCount_v2(deviceCount); }

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t* device) {
  if (device == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  if (!initialised()) return NVML_ERROR_UNINITIALIZED;
  auto& s = state();
  if (index >= s.deviceCount) return NVML_ERROR_INVALID_ARGUMENT;
  *device = handleOf(s.devices[index]);
  return NVML_SUCCESS;
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t* device) {
  return nvmlDeviceGetHandleByIndex_v2(index, device);
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char* uuid, nvmlDevice_t* device) {
  if (uuid == nullptr || device == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  if (!initialised()) return NVML_ERROR_UNINITIALIZED;
  auto& s = state();
  for (unsigned i = 0; i < s.deviceCount; ++i) {
    if (strcasecmp(s.devices[i].uuid, uuid) == 0) {
      *device = handleOf(s.devices[i]);
      return NVML_SUCCESS;
    }
  }
  return NVML_ERROR_NOT_FOUND;
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char* pciBusId, nvmlDevice_t* device) {
  if (pciBusId == nullptr || device == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  if (!initialised()) return NVML_ERROR_UNINITIALIZED;
  unsigned domain = 0, bus = 0, dev = 0;
  if (!parseBusId(pciBusId, domain, bus, dev)) return NVML_ERROR_INVALID_ARGUMENT;
  auto& s = state();
  for (unsigned i = 0; i < s.deviceCount; ++i) {
    const auto& r = s.devices[i];
    if (r.pciDomain == domain && r.pciBus == bus && r.pciDevice == dev) {
      *device = handleOf(r);
      return NVML_SUCCESS;
    }
  }
  return NVML_ERROR_NOT_FOUND;
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char* pciBusId, nvmlDevice_t* device) {
  return nvmlDeviceGetHandleByPciBusId_v2(pciBusId, device);
}

// ---- what does not change -----------------------------------------------------------------------

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int* index) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  if (index == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *index = r->index;
  return NVML_SUCCESS;
}

// The session's device index: there is no /dev/nvidiaN in a Flyt application's process.
FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int* minorNumber) {
  return nvmlDeviceGetIndex(device, minorNumber);
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char* name, unsigned int length) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  return copyString(r->name, name, length);
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char* uuid, unsigned int length) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  return copyString(r->uuid, uuid, length);
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t* pci) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  if (pci == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *pci = nvmlPciInfo_t{};
  formatBusId(*r, pci->busIdLegacy, sizeof pci->busIdLegacy, true);
  formatBusId(*r, pci->busId, sizeof pci->busId, false);
  pci->domain = r->pciDomain;
  pci->bus = r->pciBus;
  pci->device = r->pciDevice;
  api::cu::DeviceStatus now;
  if (status(*r, now) == NVML_SUCCESS && (now.known & api::cu::DeviceStatus::kPciIds) != 0) {
    pci->pciDeviceId = now.pciDeviceId;
    pci->pciSubSystemId = now.pciSubsystemId;
  } else {
    pci->pciDeviceId = 0x10de;  // NVIDIA's vendor id; the device id is not known without the node's NVML
  }
  return NVML_SUCCESS;
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t* pci) {
  return nvmlDeviceGetPciInfo_v3(device, pci);
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t device, nvmlPciInfo_v1_t* pci) {
  if (pci == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  nvmlPciInfo_t now{};
  if (auto failed = nvmlDeviceGetPciInfo_v3(device, &now); failed != NVML_SUCCESS) return failed;
  *pci = nvmlPciInfo_v1_t{};
  std::memcpy(pci->busId, now.busIdLegacy, sizeof pci->busId);
  pci->domain = now.domain;
  pci->bus = now.bus;
  pci->device = now.device;
  pci->pciDeviceId = now.pciDeviceId;
  pci->pciSubSystemId = now.pciSubSystemId;
  return NVML_SUCCESS;
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int* major, int* minor) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  if (major == nullptr || minor == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *major = r->major;
  *minor = r->minor;
  return NVML_SUCCESS;
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, nvmlDeviceArchitecture_t* arch) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  if (arch == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  switch (r->major) {
    case 3: *arch = NVML_DEVICE_ARCH_KEPLER; break;
    case 5: *arch = NVML_DEVICE_ARCH_MAXWELL; break;
    case 6: *arch = NVML_DEVICE_ARCH_PASCAL; break;
    case 7: *arch = r->minor >= 5 ? NVML_DEVICE_ARCH_TURING : NVML_DEVICE_ARCH_VOLTA; break;
    case 8: *arch = r->minor >= 9 ? NVML_DEVICE_ARCH_ADA : NVML_DEVICE_ARCH_AMPERE; break;
    case 9: *arch = NVML_DEVICE_ARCH_HOPPER; break;
    case 10:
    case 12: *arch = NVML_DEVICE_ARCH_BLACKWELL; break;
    default: *arch = NVML_DEVICE_ARCH_UNKNOWN; break;
  }
  return NVML_SUCCESS;
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetComputeMode(nvmlDevice_t device, nvmlComputeMode_t* mode) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  if (mode == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *mode = static_cast<nvmlComputeMode_t>(r->computeMode);  // CUcomputemode has NVML's values
  return NVML_SUCCESS;
}

// The highest clocks the device reports (CUDA's clock-rate attributes); the clocks now are not known.
FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t device, nvmlClockType_t type, unsigned int* mhz) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  if (mhz == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  int khz = 0;
  if (type == NVML_CLOCK_GRAPHICS || type == NVML_CLOCK_SM) khz = r->clockKhz;
  if (type == NVML_CLOCK_MEM) khz = r->memoryClockKhz;
  if (khz <= 0) return NVML_ERROR_NOT_SUPPORTED;
  *mhz = static_cast<unsigned>(khz / 1000);
  return NVML_SUCCESS;
}

// MIG is the node's business: a session sees whole devices (or its share of one).
FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int* current, unsigned int* pending) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  if (current == nullptr || pending == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *current = 0;
  *pending = 0;
  return NVML_SUCCESS;
}

// ---- what changes (one round trip each) --------------------------------------------------------

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t* memory) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  if (memory == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  api::cu::DeviceStatus now;
  if (auto failed = status(*r, now); failed != NVML_SUCCESS) return failed;
  *memory = nvmlMemory_t{now.totalBytes, now.freeBytes, now.usedBytes};
  return NVML_SUCCESS;
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t* memory) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  if (memory == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  if (memory->version != nvmlMemory_v2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
  api::cu::DeviceStatus now;
  if (auto failed = status(*r, now); failed != NVML_SUCCESS) return failed;
  memory->total = now.totalBytes;
  memory->reserved = 0;
  memory->free = now.freeBytes;
  memory->used = now.usedBytes;
  return NVML_SUCCESS;
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t* utilization) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  if (utilization == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  api::cu::DeviceStatus now;
  if (auto failed = status(*r, now); failed != NVML_SUCCESS) return failed;
  if ((now.known & api::cu::DeviceStatus::kUtilization) == 0) return NVML_ERROR_NOT_SUPPORTED;
  *utilization = nvmlUtilization_t{now.gpuPercent, now.memoryPercent};
  return NVML_SUCCESS;
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, nvmlTemperatureSensors_t sensor,
                                                       unsigned int* temperature) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  if (temperature == nullptr || sensor != NVML_TEMPERATURE_GPU) return NVML_ERROR_INVALID_ARGUMENT;
  api::cu::DeviceStatus now;
  if (auto failed = status(*r, now); failed != NVML_SUCCESS) return failed;
  if ((now.known & api::cu::DeviceStatus::kTemperature) == 0) return NVML_ERROR_NOT_SUPPORTED;
  *temperature = now.temperatureCelsius;
  return NVML_SUCCESS;
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int* power) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  if (power == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  api::cu::DeviceStatus now;
  if (auto failed = status(*r, now); failed != NVML_SUCCESS) return failed;
  if ((now.known & api::cu::DeviceStatus::kPower) == 0) return NVML_ERROR_NOT_SUPPORTED;
  *power = now.powerMilliwatts;
  return NVML_SUCCESS;
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device, unsigned int* count,
                                                                   nvmlProcessInfo_v1_t* infos) {
  return processes(device, count, infos, true);
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int* count,
                                                                      nvmlProcessInfo_t* infos) {
  return processes(device, count, infos, false);
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int* count,
                                                                      nvmlProcessInfo_t* infos) {
  return processes(device, count, infos, false);
}

// No graphics work runs through Flyt.
FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t device, unsigned int* count,
                                                                       nvmlProcessInfo_t* /*infos*/) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  if (count == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *count = 0;
  return NVML_SUCCESS;
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlDevice_t device, unsigned int* count,
                                                                       nvmlProcessInfo_t* infos) {
  return nvmlDeviceGetGraphicsRunningProcesses_v3(device, count, infos);
}

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses(nvmlDevice_t device, unsigned int* count,
                                                                    nvmlProcessInfo_v1_t* /*infos*/) {
  return nvmlDeviceGetGraphicsRunningProcesses_v3(device, count, nullptr);
}

// ---- what a remoted GPU does not have ---------------------------------------------------------

namespace {
nvmlReturn_t notSupported(nvmlDevice_t device) {
  const DeviceRecord* r = nullptr;
  if (auto bad = check(device, r); bad != NVML_SUCCESS) return bad;
  return NVML_ERROR_NOT_SUPPORTED;
}
}  // namespace

FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int, nvmlEnableState_t*) {
  return notSupported(device);
}
FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetNvLinkCapability(nvmlDevice_t device, unsigned int, int, unsigned int*) {
  return notSupported(device);
}
FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(nvmlDevice_t device, unsigned int, nvmlPciInfo_t*) {
  return notSupported(device);
}
FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetNvLinkRemoteDeviceType(nvmlDevice_t device, unsigned int, int*) {
  return notSupported(device);
}
FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetP2PStatus(nvmlDevice_t device, nvmlDevice_t, int, int*) {
  return notSupported(device);
}
FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetCpuAffinity(nvmlDevice_t device, unsigned int, unsigned long*) {
  return notSupported(device);
}
FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, nvmlClockType_t, unsigned int*) {
  return notSupported(device);
}
FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetPersistenceMode(nvmlDevice_t device, nvmlEnableState_t*) {
  return notSupported(device);
}
FLYT_NVML_EXPORT nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t device, char*, unsigned int) {
  return notSupported(device);
}
