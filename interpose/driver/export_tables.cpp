// cuGetExportTable: the driver's private tables that NVIDIA's runtime (libcudart, shared or static,
// and the copies inside cuBLAS, cuDNN and other libraries) asks for by UUID. Their layout and
// meaning are known only from public reverse-engineering work (docs/dev/driver-export-tables.md
// records what Flyt relies on and where it comes from); Flyt's implementations are its own.
//
// Every table lives in static storage and is returned at the same address each time (the
// integrity check hashes those addresses). Word 0 is the table's size in bytes, except for the
// context-local-storage table, which has none and ends with a null slot. Unknown slots are null,
// as the runtime tolerates. Everything is answered in the application's process: the tables hold
// per-process state (context-local storage) or must hash what this library reports.
//
// An unknown UUID is logged once and refused with CUDA_ERROR_NOT_FOUND and a null table, which the
// runtime and libraries treat as "feature absent".
#include <cuda.h>
#include <pthread.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "driver_client.hpp"
#include "driver_internal.hpp"
#include "flyt/api/cu_identity.hpp"
#include "flyt/transport/log.hpp"
#include "md2.hpp"

#define FLYT_CU_EXPORT extern "C" __attribute__((visibility("default")))

namespace flyt::interpose::cu {
namespace {

using Uuid = std::array<std::uint8_t, 16>;

constexpr Uuid kCudartInterface = {0x6b, 0xd5, 0xfb, 0x6c, 0x5b, 0xf4, 0xe7, 0x4a,
                                   0x89, 0x87, 0xd9, 0x39, 0x12, 0xfd, 0x9d, 0xf9};
constexpr Uuid kToolsCallbackHooks = {0xa0, 0x94, 0x79, 0x8c, 0x2e, 0x74, 0x2e, 0x74,
                                      0x93, 0xf2, 0x08, 0x00, 0x20, 0x0c, 0x0a, 0x66};
constexpr Uuid kToolsTls = {0x42, 0xd8, 0x5a, 0x81, 0x23, 0xf6, 0xcb, 0x47,
                            0x82, 0x98, 0xf6, 0xe7, 0x8a, 0x3a, 0xec, 0xdc};
constexpr Uuid kContextStorage = {0xc6, 0x93, 0x33, 0x6e, 0x11, 0x21, 0xdf, 0x11,
                                  0xa8, 0xc3, 0x68, 0xf3, 0x55, 0xd8, 0x95, 0x93};
constexpr Uuid kContextChecks = {0x26, 0x3e, 0x88, 0x60, 0x7c, 0xd2, 0x61, 0x43,
                                 0x92, 0xf6, 0xbb, 0xd5, 0x00, 0x6d, 0xfa, 0x7e};
constexpr Uuid kContextIdentity = {0x21, 0x31, 0x8c, 0x60, 0x97, 0x14, 0x32, 0x48,
                                   0x8c, 0xa6, 0x41, 0xff, 0x73, 0x24, 0xc8, 0xf2};
constexpr Uuid kAlgorithmHints = {0x17, 0x34, 0xdc, 0x26, 0x80, 0x0d, 0x47, 0x45,
                                   0x87, 0x26, 0xc0, 0xf1, 0xe7, 0xdd, 0x8b, 0xca};
constexpr Uuid kFunctions = {0x6e, 0x16, 0x3f, 0xbe, 0xb9, 0x58, 0x44, 0x4d,
                             0x83, 0x5c, 0xe1, 0x82, 0xaf, 0xf1, 0x99, 0x1e};
constexpr Uuid kIntegrityCheck = {0xd4, 0x08, 0x20, 0x55, 0xbd, 0xe6, 0x70, 0x4b,
                                  0x8d, 0x34, 0xba, 0x12, 0x3c, 0x66, 0xe1, 0xf2};

// Flyt's own (flyt/api/cu_identity.hpp): a worker tells this library from NVIDIA's driver by it,
// and Flyt's libnvidia-ml.so.1 reaches the session through it.
constexpr Uuid kFlytIdentity = std::to_array(flyt::api::cu::kFlytIdentityUuid);

using Slot = const void*;

template <class Fn>
Slot slot(Fn* fn) noexcept {
  return reinterpret_cast<Slot>(fn);
}

CUcontext currentIfNull(CUcontext context) noexcept {
  return context != nullptr ? context : DriverState::get().current();
}

// ---- CUDART_INTERFACE ---------------------------------------------------------------------------

// Slot 1: the module of a fatbin wrapper {magic, version, data, ...}, loaded into the current context.
CUresult moduleFromFatbinWrapper(CUmodule* module, const void* wrapper) {
  if (module == nullptr || wrapper == nullptr) return CUDA_ERROR_INVALID_VALUE;
  struct Wrapper {
    std::uint32_t magic;
    std::uint32_t version;
    const void* data;
    const void* prelinked;
  } w;
  std::memcpy(&w, wrapper, sizeof w);
  if (w.magic != 0x466243B1 || w.data == nullptr) return CUDA_ERROR_INVALID_IMAGE;
  return loadModuleImage(module, w.data);
}

// Slot 6: the same with (what appear to be) JIT options, which Flyt does not take.
CUresult moduleFromFatbinWrapperEx(CUmodule* module, const void* wrapper, void* options, void* values,
                                   unsigned count) {
  if (options != nullptr || values != nullptr || count != 0) return CUDA_ERROR_NOT_SUPPORTED;
  return moduleFromFatbinWrapper(module, wrapper);
}

// Slot 8: a bare fatbin image, arguments in the other order.
CUresult moduleFromFatbin(const void* image, CUmodule* module, void* options, void* values, unsigned count) {
  if (options != nullptr || values != nullptr || count != 0) return CUDA_ERROR_NOT_SUPPORTED;
  if (module == nullptr || image == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return loadModuleImage(module, image);
}

// Slot 2: the device's primary context, neither retained nor made current.
CUresult primaryContextOf(CUcontext* context, CUdevice device) {
  if (context == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return primaryContext(device, context);
}

void slot7Ignored(std::size_t) {}
CUresult loadCompilers() { return CUDA_SUCCESS; }  // slot 12 (CUDA 13): the worker's driver compiles

constexpr std::size_t kCudartInterfaceSlots = 13;
const Slot kCudartInterfaceTable[kCudartInterfaceSlots] = {
    reinterpret_cast<Slot>(kCudartInterfaceSlots * sizeof(Slot)),
    slot(moduleFromFatbinWrapper), slot(primaryContextOf), nullptr, nullptr, nullptr,
    slot(moduleFromFatbinWrapperEx), slot(slot7Ignored), slot(moduleFromFatbin), nullptr, nullptr, nullptr,
    slot(loadCompilers)};

// ---- TOOLS_RUNTIME_CALLBACK_HOOKS: no tool is attached, so the buffers stay zero ---------------

std::uint32_t g_hookBuffer1[1024];
std::uint32_t g_hookBuffer2[64];
void hookBuffer1(void** buffer, std::size_t* size) {
  if (buffer != nullptr) *buffer = g_hookBuffer1;
  if (size != nullptr) *size = 1024;
}
void hookBuffer2(void** buffer, std::size_t* size) {
  if (buffer != nullptr) *buffer = g_hookBuffer2;
  if (size != nullptr) *size = 14;
}
const Slot kToolsCallbackHooksTable[7] = {reinterpret_cast<Slot>(7 * sizeof(Slot)), nullptr, slot(hookBuffer1),
                                          nullptr, nullptr, nullptr, slot(hookBuffer2)};

// ---- TOOLS_TLS: slot 2 is the calling thread's current context (cuBLASLt's kernel registry is
// keyed by it; without it cuBLAS finds no kernel) ----------------------------------------------------

CUresult toolsCurrentContext(CUcontext* context) {
  if (context == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *context = DriverState::get().current();
  return CUDA_SUCCESS;
}
const Slot kToolsTlsTable[4] = {reinterpret_cast<Slot>(4 * sizeof(Slot)), nullptr, slot(toolsCurrentContext), nullptr};

// ---- CONTEXT_IDENTITY (cuBLAS, cuBLASLt, cuFFT, cuSOLVER) ----------------------------------------
// The driver's table has 95 slots (a size word and 94 functions) and its callers do not check them
// for null, so every slot is a function: the known ones below, the rest log their slot once and
// refuse, which the callers report as an error of their own instead of jumping into nothing.
//   4:  (context, unsigned long long* id)   the context's unique id (cuCtxGetId)
//   39: (context, stream, unsigned long long* id)   a stream's unique id
//   51: (context, stream, CUstream* out, int perThread)   the stream object a stream handle names
// cuBLAS keys its per-stream workspaces by 51 then 39 (adding the thread for the per-thread stream).

void reportSlot(const char* table, std::size_t index) noexcept {
  try {
    static auto* const mutex = new std::mutex;
    static auto* const seen = new std::set<std::pair<std::string, std::size_t>>;
    std::lock_guard lock(*mutex);
    if (seen->emplace(table, index).second) {
      flyt::logger("interpose").warn("export table {} slot {} is not provided by Flyt (CUDA_ERROR_NOT_SUPPORTED)", table,
                                     index);
    }
  } catch (...) {
    // The caller still gets its answer.
  }
}

// Tables whose callers call slots without checking them: every slot Flyt does not know is a
// function that logs its table and slot once and refuses.
constexpr const char* kRefusingTableNames[] = {"21318c60", "1734dc26", "6e163fbe"};
template <int Table, std::size_t Index>
CUresult unknownSlot() {
  reportSlot(kRefusingTableNames[Table], Index);
  return CUDA_ERROR_NOT_SUPPORTED;
}
template <int Table, std::size_t Slots, std::size_t... I>
constexpr std::array<Slot, Slots> refusingTable(std::index_sequence<I...>) {
  return {reinterpret_cast<Slot>(Slots * sizeof(Slot)), slot(&unknownSlot<Table, I + 1>)...};
}
template <int Table, std::size_t Slots>
constexpr std::array<Slot, Slots> refusingTable() {
  return refusingTable<Table, Slots>(std::make_index_sequence<Slots - 1>{});
}

CUresult contextId(CUcontext context, unsigned long long* id) {
  if (id == nullptr) return CUDA_ERROR_INVALID_VALUE;
  return cuCtxGetId(currentIfNull(context), id);
}
CUresult streamId(CUcontext, CUstream stream, unsigned long long* id) {
  if (id == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *id = wireHandle(stream);
  return CUDA_SUCCESS;
}
CUresult streamObject(CUcontext, CUstream stream, CUstream* out, int) {
  if (out == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *out = stream;
  return CUDA_SUCCESS;
}

std::array<Slot, 95> contextIdentityTable() {
  auto table = refusingTable<0, 95>();
  table[4] = slot(contextId);
  table[39] = slot(streamId);
  table[51] = slot(streamObject);
  return table;
}
const std::array<Slot, 95> kContextIdentityTable = contextIdentityTable();

// ---- 1734dc26 (cuBLASLt 13, while choosing a matmul algorithm): slot 4 hands out a byte list and
// slot 13 releases it; refused, cuBLASLt goes on with an empty list, as it does when the list does
// not apply. Every slot refuses (64 are served; the driver's size is not known). ----------------------

const std::array<Slot, 64> kAlgorithmHintsTable = refusingTable<1, 64>();

// ---- FUNCTIONS (6e163fbe; cuFFT, for the modules it builds at plan time) ------------------------
//   7: (context, module, void (*visit)(void* arg, CUfunction, std::uint64_t), void* arg) calls
//      visit for each function of the module and returns how many it visited (cuFFT expects 1).
// cuFFT wants at least 8 slots; 64 are served, the others refuse.

using VisitFunction = void (*)(void*, CUfunction, std::uint64_t);
int moduleFunctions(CUcontext, CUmodule module, VisitFunction visit, void* arg) {
  if (visit == nullptr) return 0;
  unsigned count = 0;
  if (cuModuleGetFunctionCount(&count, module) != CUDA_SUCCESS || count == 0) return 0;
  std::vector<CUfunction> functions(count);
  if (cuModuleEnumerateFunctions(functions.data(), count, module) != CUDA_SUCCESS) return 0;
  for (CUfunction function : functions) visit(arg, function, 0);
  return static_cast<int>(count);
}
std::array<Slot, 64> functionsTable() {
  auto table = refusingTable<2, 64>();
  table[7] = slot(moduleFunctions);
  return table;
}
const std::array<Slot, 64> kFunctionsTable = functionsTable();

// ---- CONTEXT_LOCAL_STORAGE: the runtime's per-context state, kept here (driver_client.hpp) -------

CUresult storagePut(CUcontext context, void* key, void* value, DriverState::StorageDestructor destructor) {
  context = currentIfNull(context);
  if (context == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  DriverState::get().storagePut(context, key, value, destructor);
  return CUDA_SUCCESS;
}
// An explicit delete does not run the destructor: the caller frees the value itself.
CUresult storageDelete(CUcontext context, void* key) {
  context = currentIfNull(context);
  if (context == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  return DriverState::get().storageDelete(context, key) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}
CUresult storageGet(void** value, CUcontext context, void* key) {
  if (value == nullptr) return CUDA_ERROR_INVALID_VALUE;
  context = currentIfNull(context);
  if (context == nullptr) return CUDA_ERROR_INVALID_CONTEXT;
  const auto stored = DriverState::get().storageGet(context, key);
  *value = stored.value_or(nullptr);
  return stored ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}
const Slot kContextStorageTable[4] = {slot(storagePut), slot(storageDelete), slot(storageGet), nullptr};

// ---- CONTEXT_CHECKS: Flyt's contexts are never wrappers of others ------------------------------

CUresult contextCheck(CUcontext, unsigned* wrapped, const void** underlying) {
  if (wrapped != nullptr) *wrapped = 0;
  if (underlying != nullptr) *underlying = nullptr;
  return CUDA_SUCCESS;
}
unsigned contextChecksFlag() { return 0; }
const Slot kContextChecksTable[4] = {reinterpret_cast<Slot>(4 * sizeof(Slot)), nullptr, slot(contextCheck),
                                     slot(contextChecksFlag)};

// ---- INTEGRITY_CHECK ----------------------------------------------------------------------------
// The runtime checks that the driver is genuine by asking for a keyed digest of values it can
// compute itself: this library's driver version, the caller's pid and thread, the addresses of the
// tables it was given, the time it passes in, and every device's UUID and PCI location as this
// library reports them. Versions ending in 0 and 1 get fixed answers.

constexpr std::array<std::uint8_t, 16> kIntegrityKey = {0x14, 0x6a, 0xdd, 0xae, 0x53, 0xa9, 0xa7, 0x52,
                                                        0xaa, 0x08, 0x41, 0x36, 0x0b, 0xf5, 0x5a, 0x9f};

CUresult integrityCheck(unsigned version, std::uint64_t unixSeconds, std::uint64_t out[2]);
CUresult integritySecond(int) { return CUDA_SUCCESS; }
const Slot kIntegrityCheckTable[3] = {reinterpret_cast<Slot>(3 * sizeof(Slot)), slot(integrityCheck),
                                      slot(integritySecond)};

template <class T>
void append(std::vector<std::uint8_t>& bytes, T value) {
  const auto* raw = reinterpret_cast<const std::uint8_t*>(&value);
  bytes.insert(bytes.end(), raw, raw + sizeof value);
}

CUresult integrityCheck(unsigned version, std::uint64_t unixSeconds, std::uint64_t out[2]) {
  if (out == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (version % 10 == 0) {
    out[0] = 0x3341181C03CB675CULL;
    out[1] = 0x8ED383AA1F4CD1E8ULL;
    return CUDA_SUCCESS;
  }
  if (version % 10 == 1) {
    out[0] = 0x1841181C03CB675CULL;
    out[1] = 0x8ED383AA1F4CD1E8ULL;
    return CUDA_SUCCESS;
  }
  if (CUresult ready = DriverState::get().init(); ready != CUDA_SUCCESS) return ready;
  std::vector<std::uint8_t> message;
  append(message, static_cast<std::uint32_t>(driverVersion()));
  append(message, static_cast<std::uint32_t>(version));
  append(message, static_cast<std::uint32_t>(::getpid()));
  append(message, static_cast<std::uint32_t>(::pthread_self()));
  append(message, static_cast<const void*>(kCudartInterfaceTable));
  append(message, static_cast<const void*>(kIntegrityCheckTable));
  append(message, reinterpret_cast<const void*>(&integrityCheck));
  append(message, unixSeconds);
  const auto* snapshot = DriverState::get().devices();
  for (std::uint32_t i = 0; snapshot != nullptr && i < snapshot->deviceCount; ++i) {
    const auto* info = DriverState::get().device(static_cast<CUdevice>(i));
    message.insert(message.end(), reinterpret_cast<const std::uint8_t*>(info->uuid.bytes),
                   reinterpret_cast<const std::uint8_t*>(info->uuid.bytes) + 16);
    append(message, info->attributes[CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID]);
    append(message, info->attributes[CU_DEVICE_ATTRIBUTE_PCI_BUS_ID]);
    append(message, info->attributes[CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID]);
  }
  const Md2Digest digest = hmacMd2(kIntegrityKey, message);
  std::memcpy(out, digest.data(), digest.size());
  return CUDA_SUCCESS;
}

void callCounts(std::uint64_t* calls, std::uint64_t* waited, std::uint64_t* messages) noexcept {
  const auto counts = CuClient::get().counts();
  if (calls != nullptr) *calls = counts.calls;
  if (waited != nullptr) *waited = counts.waited;
  if (messages != nullptr) *messages = counts.messages;
}

const flyt::api::cu::FlytIdentityTable kFlytIdentityTable{sizeof(flyt::api::cu::FlytIdentityTable), &deviceStatus,
                                                          &callCounts};

// ---- lookup -------------------------------------------------------------------------------------

struct Table {
  const Uuid* uuid;
  const void* table;
};
const Table kTables[] = {
    {&kCudartInterface, kCudartInterfaceTable}, {&kToolsCallbackHooks, kToolsCallbackHooksTable},
    {&kToolsTls, kToolsTlsTable},               {&kContextStorage, kContextStorageTable},
    {&kContextChecks, kContextChecksTable},     {&kIntegrityCheck, kIntegrityCheckTable},
    {&kContextIdentity, kContextIdentityTable.data()}, {&kAlgorithmHints, kAlgorithmHintsTable.data()},
    {&kFunctions, kFunctionsTable.data()}, {&kFlytIdentity, &kFlytIdentityTable},
};

std::string uuidText(const CUuuid& id) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string text;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) text += '-';
    const auto byte = static_cast<std::uint8_t>(id.bytes[i]);
    text += kHex[byte >> 4];
    text += kHex[byte & 15];
  }
  return text;
}

void reportUnknown(const CUuuid& id) noexcept {
  try {
    static auto* const mutex = new std::mutex;
    static auto* const seen = new std::set<std::string>;
    std::string text = uuidText(id);
    std::lock_guard lock(*mutex);
    if (seen->insert(text).second) {
      flyt::logger("interpose").info("cuGetExportTable: table {} is not provided by Flyt (CUDA_ERROR_NOT_FOUND)", text);
    }
  } catch (...) {
    // The caller still gets its answer.
  }
}

}  // namespace

const void* exportTable(const CUuuid& id) noexcept {
  for (const auto& entry : kTables) {
    if (std::memcmp(entry.uuid->data(), id.bytes, 16) == 0) return entry.table;
  }
  return nullptr;
}

}  // namespace flyt::interpose::cu

FLYT_CU_EXPORT CUresult cuGetExportTable(const void** ppExportTable, const CUuuid* pExportTableId) {
  if (ppExportTable == nullptr || pExportTableId == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *ppExportTable = flyt::interpose::cu::exportTable(*pExportTableId);
  if (*ppExportTable != nullptr) return CUDA_SUCCESS;
  flyt::interpose::cu::reportUnknown(*pExportTableId);
  return CUDA_ERROR_NOT_FOUND;
}
