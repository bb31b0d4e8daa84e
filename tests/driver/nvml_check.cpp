// NVML as a framework or monitor asks it, run through `flyt run --api driver`: the program opens
// libnvidia-ml.so.1 by its soname, as PyTorch and NCCL do, and checks what it says against what the
// CUDA driver API says (device count, names, UUIDs, PCI location, compute capability, memory,
// processes), that memory NVML reports moves with the session's allocations and respects its
// quota, and that bad input is refused. It also checks the process itself: the NVML and driver
// libraries mapped are Flyt's (also when asked for by NVIDIA's path), and no NVIDIA driver library
// or /dev/nvidia* file is open in it.
//
// Usage: nvml_check [QUOTA_BYTES] (the node's memory quota for the session, if any). Prints
// "nvml_check: all checks passed" at the end.
#include <cuda.h>
#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "flyt/api/nvml_abi.h"

namespace {

int g_failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "nvml_check: FAILED: %s\n", what.c_str());
    ++g_failures;
  }
}

struct Nvml {
  void* library = nullptr;
  template <class Fn>
  Fn* fn(const char* name) {
    auto* f = reinterpret_cast<Fn*>(::dlsym(library, name));
    if (f == nullptr) {
      std::fprintf(stderr, "nvml_check: FAILED: libnvidia-ml.so.1 lacks %s\n", name);
      std::exit(1);
    }
    return f;
  }
};

std::string uuidText(const CUuuid& id) {
  char text[64];
  const auto* b = reinterpret_cast<const unsigned char*>(id.bytes);
  std::snprintf(text, sizeof text, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return text;
}

std::string fileOf(void* symbol) {
  Dl_info info{};
  if (::dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return {};
  std::error_code ec;
  return std::filesystem::canonical(info.dli_fname, ec).string();
}

// Every library of NVIDIA's driver mapped into this process must be Flyt's (the files the symbols
// came from), and no /dev/nvidia* device may be open.
void processIsClean(void* cuInitSymbol, void* nvmlInitSymbol) {
  const std::set<std::string> ours = {fileOf(cuInitSymbol), fileOf(nvmlInitSymbol)};
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const std::string name = std::filesystem::path(path).filename().string();
    if (name.rfind("libcuda.so", 0) == 0 || name.rfind("libnvidia-", 0) == 0) {
      std::error_code ec;
      check(ours.count(std::filesystem::canonical(path, ec).string()) == 1, "a driver library not Flyt's is mapped: " + path);
    }
    check(path.rfind("/dev/nvidia", 0) != 0, "an NVIDIA device is mapped: " + path);
  }
  for (const auto& fd : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(fd.path(), ec).string();
    check(target.rfind("/dev/nvidia", 0) != 0, "an NVIDIA device is open: " + target);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const unsigned long long quota = argc > 1 ? std::strtoull(argv[1], nullptr, 0) : 0;
  Nvml nvml{::dlopen("libnvidia-ml.so.1", RTLD_NOW)};
  if (nvml.library == nullptr) {
    std::fprintf(stderr, "nvml_check: FAILED: libnvidia-ml.so.1 did not load: %s\n", ::dlerror());
    return 1;
  }
  check(::dlsym(nvml.library, "flytNvmlIdentity") != nullptr, "the libnvidia-ml.so.1 loaded is Flyt's");
  auto* init = nvml.fn<nvmlReturn_t()>("nvmlInit_v2");
  auto* shutdown = nvml.fn<nvmlReturn_t()>("nvmlShutdown");
  auto* errorString = nvml.fn<const char*(nvmlReturn_t)>("nvmlErrorString");
  auto* count = nvml.fn<nvmlReturn_t(unsigned*)>("nvmlDeviceGetCount_v2");
  auto* byIndex = nvml.fn<nvmlReturn_t(unsigned, nvmlDevice_t*)>("nvmlDeviceGetHandleByIndex_v2");
  auto* byUuid = nvml.fn<nvmlReturn_t(const char*, nvmlDevice_t*)>("nvmlDeviceGetHandleByUUID");
  auto* byBus = nvml.fn<nvmlReturn_t(const char*, nvmlDevice_t*)>("nvmlDeviceGetHandleByPciBusId_v2");
  auto* name = nvml.fn<nvmlReturn_t(nvmlDevice_t, char*, unsigned)>("nvmlDeviceGetName");
  auto* uuid = nvml.fn<nvmlReturn_t(nvmlDevice_t, char*, unsigned)>("nvmlDeviceGetUUID");
  auto* pci = nvml.fn<nvmlReturn_t(nvmlDevice_t, nvmlPciInfo_t*)>("nvmlDeviceGetPciInfo_v3");
  auto* capability = nvml.fn<nvmlReturn_t(nvmlDevice_t, int*, int*)>("nvmlDeviceGetCudaComputeCapability");
  auto* memory = nvml.fn<nvmlReturn_t(nvmlDevice_t, nvmlMemory_t*)>("nvmlDeviceGetMemoryInfo");
  auto* memory2 = nvml.fn<nvmlReturn_t(nvmlDevice_t, nvmlMemory_v2_t*)>("nvmlDeviceGetMemoryInfo_v2");
  auto* utilization = nvml.fn<nvmlReturn_t(nvmlDevice_t, nvmlUtilization_t*)>("nvmlDeviceGetUtilizationRates");
  auto* processes = nvml.fn<nvmlReturn_t(nvmlDevice_t, unsigned*, nvmlProcessInfo_t*)>(
      "nvmlDeviceGetComputeRunningProcesses_v3");
  auto* cudaVersion = nvml.fn<nvmlReturn_t(int*)>("nvmlSystemGetCudaDriverVersion_v2");
  auto* driverVersion = nvml.fn<nvmlReturn_t(char*, unsigned)>("nvmlSystemGetDriverVersion");

  unsigned devices = 0;
  check(count(&devices) == NVML_ERROR_UNINITIALIZED, "a query before nvmlInit is NVML_ERROR_UNINITIALIZED");
  if (nvmlReturn_t r = init(); r != NVML_SUCCESS) {
    std::fprintf(stderr, "nvml_check: FAILED: nvmlInit_v2: %s\n", errorString(r));
    return 1;
  }
  check(cuInit(0) == CUDA_SUCCESS, "cuInit");
  int cuDevices = 0;
  check(cuDeviceGetCount(&cuDevices) == CUDA_SUCCESS && cuDevices > 0, "cuDeviceGetCount");
  check(count(&devices) == NVML_SUCCESS && devices == static_cast<unsigned>(cuDevices),
        "NVML's device count is the driver's");
  int version = 0, cuVersion = 0;
  cuDriverGetVersion(&cuVersion);
  check(cudaVersion(&version) == NVML_SUCCESS && version == cuVersion, "NVML's CUDA driver version is the driver's");
  char text[96];
  check(driverVersion(text, sizeof text) == NVML_SUCCESS && text[0] != '\0', "nvmlSystemGetDriverVersion");
  check(driverVersion(text, 1) == NVML_ERROR_INSUFFICIENT_SIZE, "a short version buffer is INSUFFICIENT_SIZE");

  for (unsigned i = 0; i < devices; ++i) {
    nvmlDevice_t device = nullptr;
    check(byIndex(i, &device) == NVML_SUCCESS && device != nullptr, "nvmlDeviceGetHandleByIndex_v2");
    char cuName[256] = {};
    cuDeviceGetName(cuName, sizeof cuName, static_cast<CUdevice>(i));
    check(name(device, text, sizeof text) == NVML_SUCCESS && std::string(text) == cuName, "NVML's name is the driver's");
    CUuuid cuUuid{};
    cuDeviceGetUuid(&cuUuid, static_cast<CUdevice>(i));
    check(uuid(device, text, sizeof text) == NVML_SUCCESS && text == uuidText(cuUuid), "NVML's UUID is the driver's");
    nvmlDevice_t again = nullptr;
    check(byUuid(text, &again) == NVML_SUCCESS && again == device, "the device found by its UUID");
    nvmlPciInfo_t info{};
    check(pci(device, &info) == NVML_SUCCESS, "nvmlDeviceGetPciInfo_v3");
    int domain = 0, bus = 0, slot = 0;
    cuDeviceGetAttribute(&domain, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, static_cast<CUdevice>(i));
    cuDeviceGetAttribute(&bus, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, static_cast<CUdevice>(i));
    cuDeviceGetAttribute(&slot, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, static_cast<CUdevice>(i));
    check(info.domain == static_cast<unsigned>(domain) && info.bus == static_cast<unsigned>(bus) &&
              info.device == static_cast<unsigned>(slot) && (info.pciDeviceId & 0xffff) == 0x10de,
          "NVML's PCI location is the driver's");
    check(byBus(info.busId, &again) == NVML_SUCCESS && again == device, "the device found by its bus id");
    check(byBus(info.busIdLegacy, &again) == NVML_SUCCESS && again == device, "the device found by its legacy bus id");
    int major = 0, minor = 0, cuMajor = 0, cuMinor = 0;
    cuDeviceGetAttribute(&cuMajor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, static_cast<CUdevice>(i));
    cuDeviceGetAttribute(&cuMinor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, static_cast<CUdevice>(i));
    check(capability(device, &major, &minor) == NVML_SUCCESS && major == cuMajor && minor == cuMinor,
          "NVML's compute capability is the driver's");
    nvmlUtilization_t rates{};
    const nvmlReturn_t rated = utilization(device, &rates);
    check(rated == NVML_SUCCESS ? rates.gpu <= 100 && rates.memory <= 100 : rated == NVML_ERROR_NOT_SUPPORTED,
          "utilisation is a percentage, or not supported");
  }

  // Memory moves with the session's allocations, and a quota is the device's size.
  nvmlDevice_t device = nullptr;
  byIndex(0, &device);
  CUcontext context = nullptr;
  check(cuDevicePrimaryCtxRetain(&context, 0) == CUDA_SUCCESS && cuCtxSetCurrent(context) == CUDA_SUCCESS, "a context");
  nvmlMemory_t before{};
  check(memory(device, &before) == NVML_SUCCESS, "nvmlDeviceGetMemoryInfo");
  check(before.used <= before.total && before.free <= before.total, "used and free within total");
  size_t cuTotal = 0;
  cuDeviceTotalMem(&cuTotal, 0);
  // NVIDIA's NVML counts the memory its driver reserves, cuDeviceTotalMem does not; with a quota
  // both are the quota.
  if (quota != 0) {
    check(before.total == quota && cuTotal == quota, "with a quota, NVML's and the driver's memory total is the quota");
  } else {
    check(before.total >= cuTotal, "NVML's memory total is at least the driver's");
  }
  constexpr size_t kBytes = 64u << 20;
  CUdeviceptr block = 0;
  check(cuMemAlloc(&block, kBytes) == CUDA_SUCCESS, "cuMemAlloc 64 MiB");
  nvmlMemory_t after{};
  check(memory(device, &after) == NVML_SUCCESS && after.used >= before.used + kBytes,
        "an allocation shows in NVML's used memory");
  nvmlMemory_v2_t v2{};
  v2.version = nvmlMemory_v2;
  check(memory2(device, &v2) == NVML_SUCCESS && v2.total == after.total, "nvmlDeviceGetMemoryInfo_v2");
  v2.version = 1;
  check(memory2(device, &v2) == NVML_ERROR_ARGUMENT_VERSION_MISMATCH, "a wrong struct version is refused");
  unsigned listed = 0;
  check(processes(device, &listed, nullptr) == NVML_ERROR_INSUFFICIENT_SIZE && listed == 1,
        "one process is asked room for");
  nvmlProcessInfo_t process{};
  listed = 1;
  check(processes(device, &listed, &process) == NVML_SUCCESS && listed == 1 &&
            process.pid == static_cast<unsigned>(::getpid()) && process.usedGpuMemory >= kBytes,
        "this process is listed with its memory");
  cuMemFree(block);

  // Bad input.
  nvmlDevice_t forged = reinterpret_cast<nvmlDevice_t>(&devices);
  check(name(forged, text, sizeof text) == NVML_ERROR_INVALID_ARGUMENT, "a forged handle is INVALID_ARGUMENT");
  check(byIndex(devices, &device) == NVML_ERROR_INVALID_ARGUMENT, "an index past the last device");
  check(byUuid("GPU-00000000-0000-0000-0000-000000000000", &device) == NVML_ERROR_NOT_FOUND, "an unknown UUID");
  check(byBus("not a bus id", &device) == NVML_ERROR_INVALID_ARGUMENT, "a malformed bus id");
  check(std::strcmp(errorString(NVML_ERROR_NOT_SUPPORTED), "Not Supported") == 0, "nvmlErrorString");

  // NVIDIA's libraries asked for by path are answered with Flyt's (libflyt-dlopen.so).
  void* byPath = ::dlopen("/usr/lib/x86_64-linux-gnu/libcuda.so.1", RTLD_NOW);
  check(byPath != nullptr && ::dlsym(byPath, "cuInit") == ::dlsym(RTLD_DEFAULT, "cuInit"),
        "dlopen of NVIDIA's libcuda.so.1 by path is Flyt's");
  byPath = ::dlopen("/no/such/directory/libnvidia-ml.so.580.95.05", RTLD_NOW);
  check(byPath != nullptr && ::dlsym(byPath, "nvmlInit_v2") == reinterpret_cast<void*>(init),
        "dlopen of NVIDIA's NVML by path is Flyt's");
  processIsClean(::dlsym(RTLD_DEFAULT, "cuInit"), reinterpret_cast<void*>(init));
  check(shutdown() == NVML_SUCCESS, "nvmlShutdown");
  check(count(&devices) == NVML_ERROR_UNINITIALIZED, "a query after nvmlShutdown is NVML_ERROR_UNINITIALIZED");
  check(shutdown() == NVML_ERROR_UNINITIALIZED, "a second nvmlShutdown");
  cuDevicePrimaryCtxRelease(0);
  if (g_failures != 0) {
    std::fprintf(stderr, "nvml_check: %d check(s) failed\n", g_failures);
    return 1;
  }
  std::printf("nvml_check: all checks passed\n");
  return 0;
}
