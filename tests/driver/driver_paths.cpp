// A program written against the CUDA driver API (cuda.h, linked against the toolkit's libcuda
// stub), run through `flyt run --api driver`: every call reaches Flyt's libcuda.so.1 and a Flyt
// worker. It checks device queries, contexts, allocations and copies, streams and events,
// cuGetProcAddress and cuGetExportTable, module loading and launches (kernel results only where
// the device is a GPU: the stand-in does not run kernels), and that bad input is refused cleanly.
//
// Usage: driver_paths KERNELS.fatbin. Prints "driver_paths: all checks passed" at the end.
#include <cuda.h>
#include <dlfcn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace {

int g_failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "driver_paths: FAILED: %s\n", what);
    ++g_failures;
  }
}

void checkCall(CUresult result, const char* what) {
  if (result != CUDA_SUCCESS) {
    const char* name = nullptr;
    cuGetErrorName(result, &name);
    std::fprintf(stderr, "driver_paths: FAILED: %s returned %d (%s)\n", what, static_cast<int>(result),
                 name != nullptr ? name : "?");
    ++g_failures;
  }
}

#define CHECK_CALL(call) checkCall((call), #call)

void procAddresses() {
  void* fn = nullptr;
  CUdriverProcAddressQueryResult status{};
  CHECK_CALL(cuGetProcAddress("cuMemAlloc", &fn, 12000, CU_GET_PROC_ADDRESS_DEFAULT, &status));
  check(fn == dlsym(RTLD_DEFAULT, "cuMemAlloc_v2") && fn != nullptr, "cuGetProcAddress(cuMemAlloc, 12000) is cuMemAlloc_v2");
  CHECK_CALL(cuGetProcAddress("cuMemAlloc", &fn, 2000, CU_GET_PROC_ADDRESS_DEFAULT, &status));
  check(fn == dlsym(RTLD_DEFAULT, "cuMemAlloc"), "cuGetProcAddress(cuMemAlloc, 2000) is the legacy cuMemAlloc");
  CHECK_CALL(cuGetProcAddress("cuMemcpyHtoD", &fn, 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, &status));
  check(fn == dlsym(RTLD_DEFAULT, "cuMemcpyHtoD_v2_ptds"), "per-thread cuMemcpyHtoD is cuMemcpyHtoD_v2_ptds");
  check(cuGetProcAddress("cuNoSuchFunction", &fn, 13000, 0, &status) == CUDA_ERROR_NOT_FOUND && fn == nullptr &&
            status == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND,
        "an unknown name is CUDA_ERROR_NOT_FOUND");
  check(cuGetProcAddress("cuLibraryLoadData", &fn, 11000, 0, &status) == CUDA_ERROR_NOT_FOUND &&
            status == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT,
        "a name newer than the asked version is VERSION_NOT_SUFFICIENT");
}

// True when `pointer` lies in a mapping of one of Flyt's data-region segments (/proc/self/maps).
bool inDataRegion(const void* pointer) {
  std::ifstream maps("/proc/self/maps");
  const auto address = reinterpret_cast<std::uintptr_t>(pointer);
  for (std::string line; std::getline(maps, line);) {
    std::uintptr_t begin = 0, end = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &begin, &end) != 2) continue;
    if (address >= begin && address < end) return line.find("flyt-region") != std::string::npos;
  }
  return false;
}

// Copies with pinned memory (in the session's data region on shared memory: single DMAs) and large
// pageable copies (pipelined through the staging ring, or inline chunks over TCP), synchronous and
// on a stream, checked byte for byte.
void hostCopies() {
  const char* server = std::getenv("FLYT_SERVER");
  const bool shm = server != nullptr && std::strncmp(server, "shm://", 6) == 0;
  constexpr std::size_t kBytes = 6 << 20;  // more than one staging slot and one inline payload
  CUdeviceptr device = 0;
  CHECK_CALL(cuMemAlloc(&device, kBytes));
  unsigned char* up = nullptr;
  unsigned char* down = nullptr;
  CHECK_CALL(cuMemAllocHost(reinterpret_cast<void**>(&up), kBytes));
  CHECK_CALL(cuMemHostAlloc(reinterpret_cast<void**>(&down), kBytes, CU_MEMHOSTALLOC_PORTABLE));
  if (up == nullptr || down == nullptr) return;
  if (shm) check(inDataRegion(up) && inDataRegion(down), "pinned memory lies in the session's data region (shm)");
  for (std::size_t i = 0; i < kBytes; ++i) up[i] = static_cast<unsigned char>(i * 7 + 3);
  CUstream stream = nullptr;
  CHECK_CALL(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  CHECK_CALL(cuMemcpyHtoDAsync(device, up, kBytes, stream));
  CHECK_CALL(cuMemcpyDtoHAsync(down, device, kBytes, stream));
  CHECK_CALL(cuStreamSynchronize(stream));
  check(std::memcmp(up, down, kBytes) == 0, "pinned asynchronous copies to the device and back");
  std::memset(down, 0, kBytes);
  CHECK_CALL(cuMemcpyHtoD(device + 4096, up + 100, 1 << 20));  // part of a pinned buffer, synchronous
  CHECK_CALL(cuMemcpyDtoH(down + 1, device + 4096, 1 << 20));
  check(std::memcmp(up + 100, down + 1, 1 << 20) == 0, "pinned synchronous copies of a part of a buffer");

  std::vector<unsigned char> pageable(kBytes), back(kBytes);
  for (std::size_t i = 0; i < kBytes; ++i) pageable[i] = static_cast<unsigned char>(i * 13 + 1);
  CHECK_CALL(cuMemcpyHtoD(device, pageable.data(), kBytes));
  CHECK_CALL(cuMemcpyDtoH(back.data(), device, kBytes));
  check(back == pageable, "large pageable synchronous copies to the device and back");
  std::fill(back.begin(), back.end(), 0);
  CHECK_CALL(cuMemcpyHtoDAsync(device, up, kBytes, stream));  // pinned, then pageable on the same stream
  CHECK_CALL(cuMemcpyHtoDAsync(device + 64, pageable.data() + 64, kBytes - 64, stream));
  CHECK_CALL(cuMemcpyDtoHAsync(back.data(), device, kBytes, stream));
  CHECK_CALL(cuStreamSynchronize(stream));
  check(std::memcmp(back.data(), up, 64) == 0 && std::memcmp(back.data() + 64, pageable.data() + 64, kBytes - 64) == 0,
        "pinned and large pageable asynchronous copies in stream order");
  check(cuMemcpyDtoHAsync(down, device, kBytes + 1, stream) != CUDA_SUCCESS, "a copy past a pinned buffer's allocation is refused");
  CHECK_CALL(cuStreamDestroy(stream));
  CHECK_CALL(cuMemFreeHost(up));
  CHECK_CALL(cuMemFreeHost(down));
  CHECK_CALL(cuMemFree(device));
}

// Flyt's identity table (api/include/flyt/api/cu_identity.hpp): the session's call counts.
struct FlytIdentity {
  std::size_t bytes;
  void* deviceStatus;
  void (*callCounts)(std::uint64_t* calls, std::uint64_t* waited, std::uint64_t* messages) noexcept;
};
std::uint64_t waitedCalls() {
  CUuuid uuid{};
  std::memcpy(uuid.bytes, "Flyt libcuda.so1", 16);
  const void* table = nullptr;
  if (cuGetExportTable(&table, &uuid) != CUDA_SUCCESS || table == nullptr) return 0;
  const auto* identity = static_cast<const FlytIdentity*>(table);
  if (identity->bytes < sizeof(FlytIdentity) || identity->callCounts == nullptr) return 0;
  std::uint64_t calls = 0, waited = 0, messages = 0;
  identity->callCounts(&calls, &waited, &messages);
  return waited;
}

// Small synchronous host-to-device copies into the session's allocations are sent without waiting
// (interpose/driver/copies.cpp): the bytes are taken at the call (the buffer is overwritten at
// once), land in call order, and a copy the client cannot vouch for is still refused at once.
void smallSynchronousCopies() {
  constexpr std::size_t kChunk = 4096, kCount = 64;
  CUdeviceptr device = 0;
  CHECK_CALL(cuMemAlloc(&device, kChunk * kCount));
  unsigned char* pinned = nullptr;
  CHECK_CALL(cuMemAllocHost(reinterpret_cast<void**>(&pinned), kChunk));
  if (pinned == nullptr) return;
  std::vector<unsigned char> pageable(kChunk), expected(kChunk * kCount), back(kChunk * kCount);
  const std::uint64_t waitedBefore = waitedCalls();
  for (std::size_t i = 0; i < kCount; ++i) {
    unsigned char* source = i % 2 == 0 ? pageable.data() : pinned;
    for (std::size_t b = 0; b < kChunk; ++b) source[b] = static_cast<unsigned char>(i * 31 + b);
    std::memcpy(expected.data() + i * kChunk, source, kChunk);
    CHECK_CALL(cuMemcpyHtoD(device + i * kChunk, source, kChunk));
    std::memset(source, 0xee, kChunk);  // the copy took its bytes at the call
  }
  CHECK_CALL(cuMemcpyHtoD(device + 8, pageable.data(), 8));  // overlaps the first: order counts
  std::memset(expected.data() + 8, 0xee, 8);
  const std::uint64_t waitedAfter = waitedCalls();
  if (waitedBefore != 0) {
    check(waitedAfter == waitedBefore, "small synchronous copies into an allocation are not waited for");
  }
  CHECK_CALL(cuMemcpyDtoH(back.data(), device, back.size()));
  check(back == expected, "small synchronous copies land in order, with the bytes of the call");
  check(cuMemcpyHtoD(device + kChunk * kCount - 4, pageable.data(), 8) != CUDA_SUCCESS,
        "a small synchronous copy past the allocation is refused at once");
  check(cuMemcpyHtoD(device + (1ULL << 40), pageable.data(), 8) != CUDA_SUCCESS,
        "a small synchronous copy to an unknown address is refused at once");
  CHECK_CALL(cuMemFreeHost(pinned));
  CHECK_CALL(cuMemFree(device));
}

// Mapped pinned memory: over shared memory cuMemHostGetDevicePointer answers for memory of the data
// region, and copies, memsets and kernels reach the application's memory through the device address.
// Over TCP the GPU cannot reach the application's memory: NOT_SUPPORTED.
void mappedHost(CUfunction fillIndex, bool standIn) {
  const char* server = std::getenv("FLYT_SERVER");
  const bool shm = server != nullptr && std::strncmp(server, "shm://", 6) == 0;
  constexpr unsigned kCount = 4096;
  constexpr std::size_t kBytes = kCount * sizeof(unsigned);
  unsigned* host = nullptr;
  CHECK_CALL(cuMemHostAlloc(reinterpret_cast<void**>(&host), kBytes, CU_MEMHOSTALLOC_DEVICEMAP));
  if (host == nullptr) return;
  CUdeviceptr base = 0;
  const CUresult got = cuMemHostGetDevicePointer(&base, host, 0);
  if (!shm) {
    check(got == CUDA_ERROR_NOT_SUPPORTED, "cuMemHostGetDevicePointer over TCP is NOT_SUPPORTED");
    CHECK_CALL(cuMemFreeHost(host));
    return;
  }
  checkCall(got, "cuMemHostGetDevicePointer(region memory)");
  CUdeviceptr inner = 0;
  CHECK_CALL(cuMemHostGetDevicePointer(&inner, host + 16, 0));
  check(inner == base + 16 * sizeof(unsigned), "the device address of a byte inside follows its offset");
  check(cuMemHostGetDevicePointer(&inner, host, 1) == CUDA_ERROR_INVALID_VALUE, "flags other than 0 are refused");
  unsigned local = 0;
  check(cuMemHostGetDevicePointer(&inner, &local, 0) == CUDA_ERROR_INVALID_VALUE, "memory that is not pinned is refused");
  std::printf("driver_paths: mapped pinned memory: host %p, device %#llx\n", static_cast<void*>(host), base);
  CUdeviceptr attribute = 0;
  CHECK_CALL(cuPointerGetAttribute(&attribute, CU_POINTER_ATTRIBUTE_DEVICE_POINTER,
                                   static_cast<CUdeviceptr>(reinterpret_cast<std::uintptr_t>(host))));
  check(attribute == base, "CU_POINTER_ATTRIBUTE_DEVICE_POINTER of pinned memory is its mapped address");
  for (unsigned i = 0; i < kCount; ++i) host[i] = i * 5;
  std::vector<unsigned> seen(kCount);
  CHECK_CALL(cuMemcpyDtoH(seen.data(), base, kBytes));
  check(seen[0] == 0 && seen[7] == 35 && seen[kCount - 1] == (kCount - 1) * 5, "a copy from the device address reads the host's writes");
  CHECK_CALL(cuMemsetD32(base + 8 * sizeof(unsigned), 0xabcdu, 8));
  CHECK_CALL(cuCtxSynchronize());
  check(host[7] == 35 && host[8] == 0xabcdu && host[15] == 0xabcdu && host[16] == 80, "a memset of the device address lands in the host's memory");
  if (!standIn) {
    unsigned n = kCount;
    void* params[] = {&base, &n};
    CHECK_CALL(cuLaunchKernel(fillIndex, (kCount + 127) / 128, 1, 1, 128, 1, 1, 0, nullptr, params, nullptr));
    CHECK_CALL(cuCtxSynchronize());
    check(host[7] == 22 && host[kCount - 1] == (kCount - 1) * 3 + 1, "a kernel writes the application's pinned memory directly");
  }
  CHECK_CALL(cuMemFreeHost(host));
}

CUuuid uuidOf(const unsigned char (&bytes)[16]) {
  CUuuid id;
  std::memcpy(id.bytes, bytes, sizeof bytes);
  return id;
}

void exportTables() {
  const unsigned char bytes[16] = {0x6b, 0xd5, 0xfb, 0x6c, 0x5b, 0xf4, 0xe7, 0x4a,
                                   0x89, 0x87, 0xd9, 0x39, 0x12, 0xfd, 0x9d, 0xf9};
  CUuuid cudart;
  std::memcpy(cudart.bytes, bytes, sizeof bytes);
  const void* table = nullptr;
  CHECK_CALL(cuGetExportTable(&table, &cudart));
  check(table != nullptr && *static_cast<const std::size_t*>(table) == 13 * sizeof(void*),
        "the runtime interface table has 13 slots");
  // The context-identity table: a context's id (slot 4) as cuCtxGetId answers it; every slot callable.
  const CUuuid identity = uuidOf({0x21, 0x31, 0x8c, 0x60, 0x97, 0x14, 0x32, 0x48, 0x8c, 0xa6, 0x41, 0xff, 0x73, 0x24, 0xc8, 0xf2});
  CHECK_CALL(cuGetExportTable(&table, &identity));
  const auto* slots = static_cast<void* const*>(table);
  const std::size_t count = reinterpret_cast<std::size_t>(slots[0]) / sizeof(void*);
  bool allCallable = count == 95;
  for (std::size_t i = 1; i < count; ++i) allCallable = allCallable && slots[i] != nullptr;
  check(allCallable, "the context-identity table has 95 slots, none null");
  CUcontext current = nullptr;
  CHECK_CALL(cuCtxGetCurrent(&current));
  unsigned long long viaTable = 0, viaApi = 0;
  CHECK_CALL(reinterpret_cast<CUresult (*)(CUcontext, unsigned long long*)>(slots[4])(nullptr, &viaTable));
  CHECK_CALL(cuCtxGetId(current, &viaApi));
  check(viaTable == viaApi, "the context-identity table's slot 4 is the current context's id");
  check(reinterpret_cast<CUresult (*)()>(slots[7])() == CUDA_ERROR_NOT_SUPPORTED, "an unknown slot refuses");
  const CUuuid unknown = {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}};
  table = &unknown;
  check(cuGetExportTable(&table, &unknown) == CUDA_ERROR_NOT_FOUND && table == nullptr,
        "an unknown export table is CUDA_ERROR_NOT_FOUND with a null table");
}

std::vector<char> readFile(const char* path) {
  std::ifstream file(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

}  // namespace

// Virtual memory as PyTorch's expandable segments use it: one reservation, two physical chunks
// mapped side by side, a copy spanning both, the quota view of it, and what is refused.
void virtualMemory(CUdevice device) {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = device;
  std::size_t granularity = 0;
  CHECK_CALL(cuMemGetAllocationGranularity(&granularity, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM));
  check(granularity > 0 && (granularity & (granularity - 1)) == 0, "the granularity is a power of two");
  if (granularity == 0) return;
  CUdeviceptr base = 0;
  CHECK_CALL(cuMemAddressReserve(&base, 4 * granularity, 0, 0, 0));
  CUmemGenericAllocationHandle first = 0, second = 0;
  CHECK_CALL(cuMemCreate(&first, granularity, &prop, 0));
  CHECK_CALL(cuMemCreate(&second, granularity, &prop, 0));
  std::vector<unsigned char> bytes(2 * granularity), back(2 * granularity);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(i * 7 + i / 4096);
  check(cuMemcpyHtoD(base, bytes.data(), 64) != CUDA_SUCCESS, "a copy into reserved but unmapped space is refused");
  CHECK_CALL(cuMemMap(base, granularity, 0, first, 0));
  CHECK_CALL(cuMemMap(base + granularity, granularity, 0, second, 0));
  check(cuMemMap(base, granularity, 0, second, 0) != CUDA_SUCCESS, "mapping over a mapping is refused");
  CUmemAccessDesc access{};
  access.location = prop.location;
  access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  CHECK_CALL(cuMemSetAccess(base, 2 * granularity, &access, 1));
  unsigned long long flags = 0;
  CHECK_CALL(cuMemGetAccess(&flags, &prop.location, base + granularity + 5));
  check(flags == CU_MEM_ACCESS_FLAGS_PROT_READWRITE, "cuMemGetAccess reads the access set");
  CHECK_CALL(cuMemcpyHtoD(base, bytes.data(), bytes.size()));  // spans both mappings
  CHECK_CALL(cuMemcpyDtoH(back.data(), base, back.size()));
  check(back == bytes, "a copy across two mappings of one reservation round-trips");
  CUmemAllocationProp got{};
  CHECK_CALL(cuMemGetAllocationPropertiesFromHandle(&got, second));
  check(got.location.id == device && got.type == CU_MEM_ALLOCATION_TYPE_PINNED, "allocation properties");
  check(cuMemcpyHtoD(base + granularity, bytes.data(), 2 * granularity) != CUDA_SUCCESS,
        "a copy past the last mapping is refused");
  check(cuMemRelease(first) != CUDA_SUCCESS, "releasing mapped memory is refused");
  check(cuMemUnmap(base, 2 * granularity) != CUDA_SUCCESS, "unmapping two mappings at once is refused");
  check(cuMemAddressFree(base, 4 * granularity) != CUDA_SUCCESS, "freeing a reservation still mapped is refused");
  CHECK_CALL(cuMemUnmap(base, granularity));
  CHECK_CALL(cuMemUnmap(base + granularity, granularity));
  check(cuMemcpyHtoD(base, bytes.data(), 64) != CUDA_SUCCESS, "a copy into unmapped space is refused");
  CHECK_CALL(cuMemRelease(first));
  CHECK_CALL(cuMemRelease(second));
  check(cuMemRelease(second) != CUDA_SUCCESS, "releasing twice is refused");
  check(cuMemAddressFree(base, granularity) != CUDA_SUCCESS, "freeing part of a reservation is refused");
  CHECK_CALL(cuMemAddressFree(base, 4 * granularity));
}

// Managed memory: the host writes and reads it directly (page faults fetch it from the device),
// device calls between see the host's writes, copies take it as device memory, and the queries
// know it. `fill` writes out[i] = 3i + 1 on a GPU (the stand-in runs no kernels).
void managedMemory(CUdevice device, CUfunction fill, bool standIn) {
  int attribute = -1;
  CHECK_CALL(cuDeviceGetAttribute(&attribute, CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY, device));
  check(attribute == 1, "managed memory is supported");
  CHECK_CALL(cuDeviceGetAttribute(&attribute, CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS, device));
  check(attribute == 0, "managed memory is never accessed by host and device at once");
  void* fn = nullptr;
  CUdriverProcAddressQueryResult status{};
  CHECK_CALL(cuGetProcAddress("cuMemAllocManaged", &fn, 13000, CU_GET_PROC_ADDRESS_DEFAULT, &status));
  check(fn != nullptr && fn == dlsym(RTLD_DEFAULT, "cuMemAllocManaged"), "cuGetProcAddress hands out cuMemAllocManaged");

  constexpr std::size_t kCount = 700'000;  // 2.8 MB: many 64 KiB chunks, two 2 MiB granules
  constexpr std::size_t kHalf = kCount / 2;
  constexpr std::size_t kBytes = kCount * sizeof(unsigned);
  CUdeviceptr managed = 0;
  CHECK_CALL(cuMemAllocManaged(&managed, kBytes, CU_MEM_ATTACH_GLOBAL));
  if (managed == 0) return;
  auto* p = reinterpret_cast<unsigned*>(static_cast<std::uintptr_t>(managed));
  bool zeros = true;
  for (std::size_t i = 0; i < kCount; i += 1000) zeros = zeros && p[i] == 0;
  check(zeros, "new managed memory reads as zeros");
  for (std::size_t i = 0; i < kCount; ++i) p[i] = static_cast<unsigned>(i * 7 + 5);
  CHECK_CALL(cuMemsetD32(managed + kHalf * sizeof(unsigned), 0xabcdu, kCount - kHalf));
  bool right = true;
  for (std::size_t i = 0; i < kCount; ++i) right = right && p[i] == (i < kHalf ? i * 7 + 5 : 0xabcdu);
  check(right, "the host reads its own writes and a device memset of the other half");

  std::vector<unsigned> back(kCount);
  CHECK_CALL(cuMemcpyDtoH(back.data(), managed, kBytes));
  check(back[0] == 5 && back[kHalf - 1] == (kHalf - 1) * 7 + 5 && back[kHalf] == 0xabcdu && back[kCount - 1] == 0xabcdu,
        "cuMemcpyDtoH from managed memory");
  p[kHalf] = 42;  // a write to a chunk the host only read
  CHECK_CALL(cuMemcpyDtoH(back.data(), managed + kHalf * sizeof(unsigned), sizeof(unsigned)));
  check(back[0] == 42, "a host write to a chunk it had read reaches the device");
  const unsigned pattern[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  CHECK_CALL(cuMemcpyHtoD(managed + 16, pattern, sizeof pattern));
  check(std::memcmp(p + 4, pattern, sizeof pattern) == 0 && p[3] == 3 * 7 + 5 && p[20] == 20 * 7 + 5,
        "cuMemcpyHtoD into managed memory, read by the host");
  p[0] = 777;  // after a device call
  CUdeviceptr plain = 0;
  CHECK_CALL(cuMemAlloc(&plain, 64));
  CHECK_CALL(cuMemcpyDtoD(plain, managed, 64));
  CHECK_CALL(cuMemcpyDtoH(back.data(), plain, 64));
  check(back[0] == 777 && back[1] == 12, "cuMemcpyDtoD from managed memory sees the host's last write");
  CHECK_CALL(cuMemFree(plain));
  if (!standIn) {
    unsigned n = static_cast<unsigned>(kCount);
    void* params[] = {&managed, &n};
    CHECK_CALL(cuLaunchKernel(fill, (n + 127) / 128, 1, 1, 128, 1, 1, 0, nullptr, params, nullptr));
    CHECK_CALL(cuCtxSynchronize());
    right = true;
    for (std::size_t i = 0; i < kCount; ++i) right = right && p[i] == i * 3 + 1;
    check(right, "the host reads what a kernel wrote to managed memory");
  }

  unsigned memoryType = 0;
  CUdeviceptr start = 0;
  std::size_t size = 0;
  CHECK_CALL(cuPointerGetAttribute(&memoryType, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, managed + 100));
  CHECK_CALL(cuPointerGetAttribute(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, managed + 100));
  CHECK_CALL(cuPointerGetAttribute(&size, CU_POINTER_ATTRIBUTE_RANGE_SIZE, managed + 100));
  check(memoryType == CU_MEMORYTYPE_DEVICE && start == managed && size == kBytes, "pointer attributes of managed memory");
  unsigned isManaged = 0;
  CHECK_CALL(cuPointerGetAttribute(&isManaged, CU_POINTER_ATTRIBUTE_IS_MANAGED, managed + 100));
  check(isManaged == 1, "managed memory says it is managed");
  // Managed memory as the host side of a host/device copy is copied on the device.
  CUdeviceptr scratch = 0;
  CHECK_CALL(cuMemAlloc(&scratch, 64));
  std::vector<unsigned> staged(16, 0);
  CHECK_CALL(cuMemcpyHtoD(scratch, p, 16 * sizeof(unsigned)));
  CHECK_CALL(cuMemcpyDtoH(staged.data(), scratch, 16 * sizeof(unsigned)));
  check(std::memcmp(staged.data(), p, 16 * sizeof(unsigned)) == 0, "cuMemcpyHtoD from managed memory as the host side");
  CHECK_CALL(cuMemsetD32(scratch, 4242u, 16));
  CHECK_CALL(cuMemcpyDtoH(p, scratch, 16 * sizeof(unsigned)));
  check(p[0] == 4242u && p[15] == 4242u, "cuMemcpyDtoH into managed memory as the host side");
  CHECK_CALL(cuMemFree(scratch));
  start = 0;
  size = 0;
  CHECK_CALL(cuMemGetAddressRange(&start, &size, managed + kBytes - 1));
  check(start == managed && size == kBytes, "cuMemGetAddressRange of managed memory");

  CUmemLocation onDevice{CU_MEM_LOCATION_TYPE_DEVICE, device};
  CUmemLocation onHost{CU_MEM_LOCATION_TYPE_HOST, 0};
  CHECK_CALL(cuMemAdvise(managed, kBytes, CU_MEM_ADVISE_SET_READ_MOSTLY, onDevice));
  CHECK_CALL(cuMemAdvise(managed, kBytes / 2, CU_MEM_ADVISE_SET_PREFERRED_LOCATION, onHost));
  CHECK_CALL(cuMemAdvise(managed, kBytes, CU_MEM_ADVISE_SET_ACCESSED_BY, onDevice));
  CHECK_CALL(cuMemPrefetchAsync(managed, kBytes, onDevice, 0, nullptr));
  int readMostly = 0, preferred = 0, prefetched = 0;
  int accessedBy[2] = {0, 0};
  CHECK_CALL(cuMemRangeGetAttribute(&readMostly, sizeof readMostly, CU_MEM_RANGE_ATTRIBUTE_READ_MOSTLY, managed, kBytes));
  CHECK_CALL(cuMemRangeGetAttribute(&preferred, sizeof preferred, CU_MEM_RANGE_ATTRIBUTE_PREFERRED_LOCATION, managed, 64));
  CHECK_CALL(cuMemRangeGetAttribute(&prefetched, sizeof prefetched, CU_MEM_RANGE_ATTRIBUTE_LAST_PREFETCH_LOCATION,
                                    managed, kBytes));
  CHECK_CALL(cuMemRangeGetAttribute(accessedBy, sizeof accessedBy, CU_MEM_RANGE_ATTRIBUTE_ACCESSED_BY, managed, kBytes));
  check(readMostly == 1 && preferred == CU_DEVICE_CPU && prefetched == device && accessedBy[0] == device &&
            accessedBy[1] == CU_DEVICE_INVALID,
        "cuMemRangeGetAttribute answers the advice and the last prefetch");
  CHECK_CALL(cuMemRangeGetAttribute(&preferred, sizeof preferred, CU_MEM_RANGE_ATTRIBUTE_PREFERRED_LOCATION, managed, kBytes));
  check(preferred == CU_DEVICE_INVALID, "a preferred location set on part of a range is not the range's");
  CHECK_CALL(cuMemPrefetchAsync(managed, kBytes, onHost, 0, nullptr));
  CHECK_CALL(cuStreamAttachMemAsync(nullptr, managed, 0, CU_MEM_ATTACH_GLOBAL));
  check(p[kCount - 1] == (standIn ? 0xabcdu : (kCount - 1) * 3 + 1), "managed memory prefetched to the host reads right");
  check(cuMemAdvise(managed + kBytes + (std::size_t{4} << 20), 64, CU_MEM_ADVISE_SET_READ_MOSTLY, onDevice) != CUDA_SUCCESS,
        "advice on memory that is not managed is refused");
  check(cuMemFree(managed + 64) != CUDA_SUCCESS, "freeing inside managed memory is refused");
  CHECK_CALL(cuMemFree(managed));
  // Its address faults as any unmapped one: Flyt's handler passes the fault on to the default action.
  const pid_t child = fork();
  if (child == 0) {
    const rlimit noCore{0, 0};
    setrlimit(RLIMIT_CORE, &noCore);
    volatile unsigned value = p[0];
    (void)value;
    _exit(0);
  }
  int childStatus = 0;
  check(child > 0 && waitpid(child, &childStatus, 0) == child && WIFSIGNALED(childStatus) &&
            WTERMSIG(childStatus) == SIGSEGV,
        "touching freed managed memory is a segmentation fault");
  check(cuMemGetAddressRange(&start, &size, managed) != CUDA_SUCCESS, "freed managed memory is no allocation");
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: driver_paths KERNELS.fatbin\n");
    return 2;
  }
  CHECK_CALL(cuInit(0));
  int version = 0;
  CHECK_CALL(cuDriverGetVersion(&version));
  check(version >= 12000, "driver version is CUDA 12 or later");
  int count = 0;
  CHECK_CALL(cuDeviceGetCount(&count));
  check(count >= 1, "at least one device");
  CUdevice device = 0;
  CHECK_CALL(cuDeviceGet(&device, 0));
  check(cuDeviceGet(&device, 99) == CUDA_ERROR_INVALID_DEVICE, "device 99 is CUDA_ERROR_INVALID_DEVICE");
  char name[256] = {};
  CHECK_CALL(cuDeviceGetName(name, sizeof name, device));
  const bool standIn = std::strstr(name, "stand-in") != nullptr;
  int major = 0, sms = 0;
  CHECK_CALL(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device));
  CHECK_CALL(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, device));
  check(major >= 7 && sms > 0, "compute capability and SM count are plausible");
  std::size_t total = 0;
  CHECK_CALL(cuDeviceTotalMem(&total, device));
  std::printf("driver_paths: %s, CUDA %d, cc %d.x, %d SMs, %zu MiB\n", name, version, major, sms, total >> 20);

  procAddresses();

  CUcontext context = nullptr, current = nullptr;
  CHECK_CALL(cuDevicePrimaryCtxRetain(&context, device));
  CHECK_CALL(cuCtxSetCurrent(context));
  CHECK_CALL(cuCtxGetCurrent(&current));
  check(current == context, "the primary context is current");
  exportTables();

  // Allocations and copies.
  constexpr unsigned kN = 1 << 18;
  std::vector<float> host(kN), back(kN);
  for (unsigned i = 0; i < kN; ++i) host[i] = static_cast<float>(i) * 0.5f;
  CUdeviceptr in = 0, out = 0;
  CHECK_CALL(cuMemAlloc(&in, kN * sizeof(float)));
  CHECK_CALL(cuMemAlloc(&out, kN * sizeof(float)));
  CHECK_CALL(cuMemcpyHtoD(in, host.data(), kN * sizeof(float)));
  CHECK_CALL(cuMemcpyDtoD(out, in, kN * sizeof(float)));
  CHECK_CALL(cuMemcpyDtoH(back.data(), out, kN * sizeof(float)));
  check(back == host, "host -> device -> device -> host round trip");
  CHECK_CALL(cuMemsetD32(out, 0x3f800000u, 16));  // 1.0f
  CHECK_CALL(cuMemcpy(reinterpret_cast<CUdeviceptr>(back.data()), out, 16 * sizeof(float)));
  check(back[0] == 1.0f && back[15] == 1.0f && back[16] == host[16], "cuMemsetD32 and unified cuMemcpy");
  std::size_t freeBytes = 0, totalBytes = 0;
  CHECK_CALL(cuMemGetInfo(&freeBytes, &totalBytes));
  check(freeBytes <= totalBytes && totalBytes > 0, "cuMemGetInfo");
  unsigned memoryType = 0;
  CHECK_CALL(cuPointerGetAttribute(&memoryType, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, in + 100));
  check(memoryType == CU_MEMORYTYPE_DEVICE, "pointer attribute: device memory");

  // 2D copies: a 64 x 100-float window of `host`, into a pitched allocation and back.
  CUdeviceptr pitched = 0;
  std::size_t pitch = 0;
  CHECK_CALL(cuMemAllocPitch(&pitched, &pitch, 100 * sizeof(float), 64, 4));
  check(pitch >= 100 * sizeof(float), "the pitch covers a row");
  CUDA_MEMCPY2D up{};
  up.srcMemoryType = CU_MEMORYTYPE_HOST;
  up.srcHost = host.data();
  up.srcPitch = 512 * sizeof(float);
  up.dstMemoryType = CU_MEMORYTYPE_DEVICE;
  up.dstDevice = pitched;
  up.dstPitch = pitch;
  up.WidthInBytes = 100 * sizeof(float);
  up.Height = 64;
  CHECK_CALL(cuMemcpy2D(&up));
  std::vector<float> window(100 * 64, -1.0f);
  CUDA_MEMCPY2D down{};
  down.srcMemoryType = CU_MEMORYTYPE_DEVICE;
  down.srcDevice = pitched;
  down.srcPitch = pitch;
  down.dstMemoryType = CU_MEMORYTYPE_HOST;
  down.dstHost = window.data();
  down.dstPitch = 100 * sizeof(float);
  down.WidthInBytes = 100 * sizeof(float);
  down.Height = 64;
  CHECK_CALL(cuMemcpy2D(&down));
  check(window[0] == host[0] && window[99] == host[99] && window[100] == host[512] && window[63 * 100 + 99] == host[63 * 512 + 99],
        "cuMemcpy2D host -> pitched device -> host");
  down.Height = 65;  // one row past the allocation
  check(cuMemcpy2D(&down) != CUDA_SUCCESS, "a 2D copy past the allocation is refused");
  CHECK_CALL(cuMemFree(pitched));

  hostCopies();
  smallSynchronousCopies();

  // Streams and events.
  CUstream stream = nullptr;
  CUevent start = nullptr, stop = nullptr;
  CHECK_CALL(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
  CHECK_CALL(cuEventCreate(&start, CU_EVENT_DEFAULT));
  CHECK_CALL(cuEventCreate(&stop, CU_EVENT_DEFAULT));
  CHECK_CALL(cuEventRecord(start, stream));
  CHECK_CALL(cuMemcpyHtoDAsync(in, host.data(), kN * sizeof(float), stream));
  CHECK_CALL(cuMemcpyDtoHAsync(back.data(), in, kN * sizeof(float), stream));
  CHECK_CALL(cuEventRecord(stop, stream));
  CHECK_CALL(cuStreamSynchronize(stream));
  float ms = -1;
  CHECK_CALL(cuEventElapsedTime(&ms, start, stop));
  check(ms >= 0 && back == host, "asynchronous copies on a stream, timed by events");

  // Modules and launches.
  const auto image = readFile(argv[1]);
  check(!image.empty(), "the kernels' fatbin is readable");
  CUmodule module = nullptr;
  CHECK_CALL(cuModuleLoadData(&module, image.data()));
  CUfunction scaleAdd = nullptr;
  CHECK_CALL(cuModuleGetFunction(&scaleAdd, module, "scale_add"));
  std::size_t offset = 0, size = 0;
  CHECK_CALL(cuFuncGetParamInfo(scaleAdd, 2, &offset, &size));
  check(offset == 16 && size == 4, "scale_add's third parameter is 4 bytes at offset 16");
  // Attributes and limits are answered in the process after the first ask, and asked again after a
  // call that changes them.
  int dynamicShared = -1;
  CHECK_CALL(cuFuncGetAttribute(&dynamicShared, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, scaleAdd));
  CHECK_CALL(cuFuncGetAttribute(&dynamicShared, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, scaleAdd));
  CHECK_CALL(cuFuncSetAttribute(scaleAdd, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, dynamicShared + 1024));
  int raised = -1;
  CHECK_CALL(cuFuncGetAttribute(&raised, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, scaleAdd));
  check(raised == dynamicShared + 1024, "a function attribute read after it was set has the new value");
  CHECK_CALL(cuFuncSetAttribute(scaleAdd, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, dynamicShared + 1024));  // again
  CHECK_CALL(cuFuncSetAttribute(scaleAdd, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, dynamicShared));
  CHECK_CALL(cuFuncGetAttribute(&raised, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, scaleAdd));
  check(raised == dynamicShared, "a repeated setting, then another one: the attribute has the last value");
  check(cuFuncSetAttribute(scaleAdd, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 1 << 30) != CUDA_SUCCESS,
        "an impossible attribute value is refused");
  std::size_t stack = 0, raisedStack = 0;
  CHECK_CALL(cuCtxGetLimit(&stack, CU_LIMIT_STACK_SIZE));
  CHECK_CALL(cuCtxSetLimit(CU_LIMIT_STACK_SIZE, stack + 1024));
  CHECK_CALL(cuCtxGetLimit(&raisedStack, CU_LIMIT_STACK_SIZE));
  check(raisedStack >= stack + 1024, "a limit read after it was set has the new value");
  check(cuModuleGetFunction(&scaleAdd, module, "no_such_kernel") == CUDA_ERROR_NOT_FOUND, "an unknown kernel is NOT_FOUND");
  // Every function of the module, with its name and layout (cuFFT reaches it through an export table).
  unsigned functionCount = 0;
  CHECK_CALL(cuModuleGetFunctionCount(&functionCount, module));
  check(functionCount >= 3, "the module has at least three functions");
  std::vector<CUfunction> functions(functionCount);
  check(cuModuleEnumerateFunctions(functions.data(), functionCount + 1, module) != CUDA_SUCCESS,
        "enumerating with the wrong count is refused");
  CHECK_CALL(cuModuleEnumerateFunctions(functions.data(), functionCount, module));
  bool namedScaleAdd = false;
  for (CUfunction f : functions) {
    const char* name = nullptr;
    if (cuFuncGetName(&name, f) == CUDA_SUCCESS && name != nullptr && std::strcmp(name, "scale_add") == 0) {
      namedScaleAdd = cuFuncGetParamInfo(f, 2, &offset, &size) == CUDA_SUCCESS && offset == 16 && size == 4;
    }
  }
  check(namedScaleAdd, "cuModuleEnumerateFunctions answers scale_add with its name and layout");
  {
    const CUuuid functionsTable =
        uuidOf({0x6e, 0x16, 0x3f, 0xbe, 0xb9, 0x58, 0x44, 0x4d, 0x83, 0x5c, 0xe1, 0x82, 0xaf, 0xf1, 0x99, 0x1e});
    const void* table = nullptr;
    CHECK_CALL(cuGetExportTable(&table, &functionsTable));
    const auto* slots = static_cast<void* const*>(table);
    check(reinterpret_cast<std::size_t>(slots[0]) >= 8 * sizeof(void*), "the functions table has at least 8 slots");
    using Visit = void (*)(void*, CUfunction, std::uint64_t);
    using Iterate = int (*)(CUcontext, CUmodule, Visit, void*);
    unsigned visited = 0;
    const int reported = reinterpret_cast<Iterate>(slots[7])(
        nullptr, module, [](void* arg, CUfunction, std::uint64_t) { ++*static_cast<unsigned*>(arg); }, &visited);
    check(visited == functionCount && reported == static_cast<int>(functionCount),
          "the functions table's slot 7 visits every function of a module");
  }
  CHECK_CALL(cuModuleGetFunction(&scaleAdd, module, "scale_add"));
  float factor = 2.0f, bias = 1.0f;
  unsigned n = kN;
  void* params[] = {&out, &in, &factor, &bias, &n};
  CHECK_CALL(cuLaunchKernel(scaleAdd, (kN + 255) / 256, 1, 1, 256, 1, 1, 0, stream, params, nullptr));
  CHECK_CALL(cuStreamSynchronize(stream));
  CHECK_CALL(cuMemcpyDtoH(back.data(), out, kN * sizeof(float)));
  if (!standIn) {
    bool right = true;
    for (unsigned i = 0; i < kN; ++i) right = right && back[i] == host[i] * 2.0f + 1.0f;
    check(right, "scale_add computed out = in * 2 + 1");
  }
  // A stream's state: busy while a kernel runs (asked), idle after a synchronisation (answered in
  // the process, and still right after more work).
  CUfunction spin = nullptr;
  CHECK_CALL(cuModuleGetFunction(&spin, module, "spin"));
  unsigned long long cycles = standIn ? 1 : 500'000'000ull;  // about a quarter second on an H100
  void* spinParams[] = {&cycles};
  CHECK_CALL(cuStreamSynchronize(stream));
  check(cuStreamQuery(stream) == CUDA_SUCCESS, "a synchronised stream is idle");
  check(cuStreamQuery(stream) == CUDA_SUCCESS, "and stays idle");
  CHECK_CALL(cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, stream, spinParams, nullptr));
  if (!standIn) check(cuStreamQuery(stream) == CUDA_ERROR_NOT_READY, "a stream running a kernel is not ready");
  CHECK_CALL(cuStreamSynchronize(stream));
  check(cuStreamQuery(stream) == CUDA_SUCCESS, "the stream is idle again");
  CHECK_CALL(cuLaunchKernel(spin, 1, 1, 1, 1, 1, 1, 0, nullptr, spinParams, nullptr));
  if (!standIn) check(cuStreamQuery(nullptr) == CUDA_ERROR_NOT_READY, "the default stream running a kernel is not ready");
  CHECK_CALL(cuCtxSynchronize());
  check(cuStreamQuery(nullptr) == CUDA_SUCCESS, "the default stream is idle after a context synchronisation");

  CUlibrary library = nullptr;
  CUkernel fillIndex = nullptr;
  CHECK_CALL(cuLibraryLoadData(&library, image.data(), nullptr, nullptr, 0, nullptr, nullptr, 0));
  CHECK_CALL(cuLibraryGetKernel(&fillIndex, library, "fill_index"));
  void* fillParams[] = {&out, &n};
  CHECK_CALL(cuLaunchKernel(reinterpret_cast<CUfunction>(fillIndex), (kN + 127) / 128, 1, 1, 128, 1, 1, 0, nullptr,
                            fillParams, nullptr));
  std::vector<unsigned> indices(kN);
  CHECK_CALL(cuMemcpyDtoH(indices.data(), out, kN * sizeof(unsigned)));
  if (!standIn) check(indices[7] == 22 && indices[kN - 1] == (kN - 1) * 3 + 1, "fill_index through a library kernel");
  mappedHost(reinterpret_cast<CUfunction>(fillIndex), standIn);

  // Function attributes are answered in the process after the first time; a setting changes only
  // the answers about its own kernel and attribute, and the same setting again is not sent.
  {
    CUfunction fillFunction = nullptr;
    CHECK_CALL(cuKernelGetFunction(&fillFunction, fillIndex));
    int registers = -1, dynamic = -1, other = -1;
    CHECK_CALL(cuKernelGetAttribute(&registers, CU_FUNC_ATTRIBUTE_NUM_REGS, fillIndex, device));
    CHECK_CALL(cuFuncGetAttribute(&other, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, scaleAdd));
    for (int value : {64 << 10, 32 << 10, 64 << 10, 64 << 10, 0}) {
      CHECK_CALL(cuKernelSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, value, fillIndex, device));
      CHECK_CALL(cuFuncSetAttribute(scaleAdd, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 16 << 10));
      CHECK_CALL(cuKernelGetAttribute(&dynamic, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, fillIndex, device));
      check(dynamic == value, "a kernel's attribute reads back as last set");
      int fromFunction = -1;  // whatever the driver answers, the kernel's function is asked (a shared scope)
      CHECK_CALL(cuFuncGetAttribute(&fromFunction, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, fillFunction));
      CHECK_CALL(cuFuncGetAttribute(&other, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, scaleAdd));
      check(other == (16 << 10), "another function keeps its own setting");
      int again = -1;
      CHECK_CALL(cuKernelGetAttribute(&again, CU_FUNC_ATTRIBUTE_NUM_REGS, fillIndex, device));
      check(again == registers, "an attribute no setting changes stays");
    }
  }

  // Stream capture: the capture state before, during and after (answered in the process while no
  // capture is active), and a captured memset replayed. The stand-in does not capture.
  {
    CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_ACTIVE;
    CHECK_CALL(cuStreamIsCapturing(stream, &status));
    check(status == CU_STREAM_CAPTURE_STATUS_NONE, "a stream is not capturing before a capture");
  }
  if (!standIn) {
    CUstreamCaptureStatus status = CU_STREAM_CAPTURE_STATUS_NONE;
    CHECK_CALL(cuStreamBeginCapture(stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
    CHECK_CALL(cuStreamIsCapturing(stream, &status));
    check(status == CU_STREAM_CAPTURE_STATUS_ACTIVE, "the stream is capturing during its capture");
    cuuint64_t captureId = 0;
    CHECK_CALL(cuStreamGetCaptureInfo(stream, &status, &captureId, nullptr, nullptr, nullptr, nullptr));
    check(status == CU_STREAM_CAPTURE_STATUS_ACTIVE, "cuStreamGetCaptureInfo sees the capture");
    CHECK_CALL(cuMemsetD32Async(out, 7, kN, stream));
    CUgraph captured = nullptr;
    CHECK_CALL(cuStreamEndCapture(stream, &captured));
    CHECK_CALL(cuStreamIsCapturing(stream, &status));
    check(status == CU_STREAM_CAPTURE_STATUS_NONE, "the stream is not capturing after its capture");
    CHECK_CALL(cuStreamGetCaptureInfo(stream, &status, &captureId, nullptr, nullptr, nullptr, nullptr));
    check(status == CU_STREAM_CAPTURE_STATUS_NONE, "cuStreamGetCaptureInfo agrees after the capture");
    CUgraphExec replay = nullptr;
    CHECK_CALL(cuMemsetD32(out, 0, kN));
    CHECK_CALL(cuGraphInstantiate(&replay, captured, 0));
    CHECK_CALL(cuGraphLaunch(replay, stream));
    CHECK_CALL(cuStreamSynchronize(stream));
    std::vector<unsigned> seven(kN);
    CHECK_CALL(cuMemcpyDtoH(seven.data(), out, kN * sizeof(unsigned)));
    check(seven[0] == 7 && seven[kN - 1] == 7, "a captured memset replayed");
    CHECK_CALL(cuGraphExecDestroy(replay));
    CHECK_CALL(cuGraphDestroy(captured));
  }

  // A graph built node by node: memset(in, 1.0f) -> copy(in -> out) -> out = in * factor + 1,
  // launched twice, the second time with the kernel node's factor changed in the instantiation.
  {
    CUgraph graph = nullptr;
    CHECK_CALL(cuGraphCreate(&graph, 0));
    CUDA_MEMSET_NODE_PARAMS memset{};
    memset.dst = in;
    memset.value = 0x3f800000u;
    memset.elementSize = 4;
    memset.width = kN;
    memset.height = 1;
    CUgraphNode memsetNode = nullptr, copyNode = nullptr, kernelNode = nullptr;
    CHECK_CALL(cuGraphAddMemsetNode(&memsetNode, graph, nullptr, 0, &memset, context));
    CUDA_MEMCPY3D copy{};
    copy.srcMemoryType = copy.dstMemoryType = CU_MEMORYTYPE_DEVICE;
    copy.srcDevice = in;
    copy.dstDevice = out;
    copy.WidthInBytes = kN * sizeof(float);
    copy.Height = copy.Depth = 1;
    CHECK_CALL(cuGraphAddMemcpyNode(&copyNode, graph, &memsetNode, 1, &copy, context));
    float graphFactor = 2.0f;
    void* graphParams[] = {&out, &in, &graphFactor, &bias, &n};
    CUDA_KERNEL_NODE_PARAMS kernel{};
    kernel.func = scaleAdd;
    kernel.gridDimX = (kN + 255) / 256;
    kernel.gridDimY = kernel.gridDimZ = 1;
    kernel.blockDimX = 256;
    kernel.blockDimY = kernel.blockDimZ = 1;
    kernel.kernelParams = graphParams;
    CHECK_CALL(cuGraphAddKernelNode(&kernelNode, graph, &copyNode, 1, &kernel));
    std::size_t nodes = 0;
    CHECK_CALL(cuGraphGetNodes(graph, nullptr, &nodes));
    check(nodes == 3, "the graph has its three nodes");
    CUgraphNode listed[3] = {};
    nodes = 3;
    CHECK_CALL(cuGraphGetNodes(graph, listed, &nodes));
    check(nodes == 3 && listed[0] == memsetNode && listed[2] == kernelNode, "cuGraphGetNodes lists the nodes by their handles");
    CUDA_MEMSET_NODE_PARAMS past = memset;
    past.width = kN + 1;
    CUgraphNode refused = nullptr;
    check(cuGraphAddMemsetNode(&refused, graph, nullptr, 0, &past, context) != CUDA_SUCCESS,
          "a memset node past the allocation is refused");
    CUDA_MEMCPY3D fromHost = copy;
    fromHost.srcMemoryType = CU_MEMORYTYPE_HOST;
    fromHost.srcHost = host.data();
    check(cuGraphAddMemcpyNode(&refused, graph, nullptr, 0, &fromHost, context) != CUDA_SUCCESS,
          "a memcpy node from host memory is refused");
    CUgraphExec exec = nullptr;
    CHECK_CALL(cuGraphInstantiate(&exec, graph, 0));
    CHECK_CALL(cuGraphLaunch(exec, stream));
    CHECK_CALL(cuStreamSynchronize(stream));
    CHECK_CALL(cuMemcpyDtoH(back.data(), out, kN * sizeof(float)));
    bool right = true;
    for (unsigned i = 0; i < kN; ++i) right = right && back[i] == (standIn ? 1.0f : 3.0f);
    check(right, standIn ? "the graph's memset and copy ran" : "the graph's memset, copy and kernel ran");
    graphFactor = 3.0f;
    CHECK_CALL(cuGraphExecKernelNodeSetParams(exec, kernelNode, &kernel));
    CHECK_CALL(cuGraphLaunch(exec, stream));
    CHECK_CALL(cuStreamSynchronize(stream));
    CHECK_CALL(cuMemcpyDtoH(back.data(), out, kN * sizeof(float)));
    if (!standIn) check(back[0] == 4.0f && back[kN - 1] == 4.0f, "the updated kernel node ran with its new factor");
    CHECK_CALL(cuGraphExecDestroy(exec));
    CHECK_CALL(cuGraphDestroy(graph));
  }

  // A cooperative launch (sent as cuLaunchKernelEx with the cooperative attribute).
  CHECK_CALL(cuMemsetD32(out, 0, kN));
  CHECK_CALL(cuLaunchCooperativeKernel(reinterpret_cast<CUfunction>(fillIndex), 4, 1, 1, 128, 1, 1, 0, stream,
                                       fillParams));
  CHECK_CALL(cuStreamSynchronize(stream));
  CHECK_CALL(cuMemcpyDtoH(indices.data(), out, kN * sizeof(unsigned)));
  if (!standIn) check(indices[511] == 511 * 3 + 1 && indices[512] == 0, "a cooperative launch ran its grid");

  virtualMemory(device);
  managedMemory(device, reinterpret_cast<CUfunction>(fillIndex), standIn);

  // Bad input is refused, and the session goes on.
  check(cuMemcpyHtoD(out + kN * sizeof(float), host.data(), 64) != CUDA_SUCCESS, "a copy past the allocation is refused");
  check(cuMemFree(in + 4) != CUDA_SUCCESS, "freeing an interior address is refused");
  check(cuLaunchKernel(reinterpret_cast<CUfunction>(0x1234560), 1, 1, 1, 1, 1, 1, 0, nullptr, params, nullptr) != CUDA_SUCCESS,
        "a launch of a forged function is refused");
  CHECK_CALL(cuCtxSynchronize());  // the forged launch's error surfaces here or above, not later
  CHECK_CALL(cuMemcpyDtoH(back.data(), in, 64));

  CHECK_CALL(cuModuleUnload(module));
  CHECK_CALL(cuLibraryUnload(library));
  CHECK_CALL(cuEventDestroy(start));
  CHECK_CALL(cuEventDestroy(stop));
  CHECK_CALL(cuStreamDestroy(stream));
  CHECK_CALL(cuMemFree(in));
  CHECK_CALL(cuMemFree(out));
  CHECK_CALL(cuDevicePrimaryCtxRelease(device));
  if (g_failures != 0) {
    std::fprintf(stderr, "driver_paths: %d checks failed\n", g_failures);
    return 1;
  }
  std::printf("driver_paths: all checks passed\n");
  return 0;
}
