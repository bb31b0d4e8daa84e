// Devices, contexts and stream state (interpose/driver/device.cpp, contexts.cpp and streams.cpp are
// the other side).
#include <cstring>

#include "flyt/api/cu_device_snapshot.hpp"
#include "flyt/api/cu_device_status.hpp"
#include "gpu_monitor.hpp"
#include "handlers.hpp"

namespace flyt::backend::cu {
namespace {

std::optional<Outcome> readDevice(ServeContext& c, CallInput in, const char* function, CUdevice& device) {
  std::int32_t ordinal = 0;
  if (!in.args.get(ordinal) || !in.args.exhausted()) return c.malformed(fmt::format("{}: bad arguments", function));
  device = ordinal;
  return c.deviceOrdinal(function, "dev", &device);
}

}  // namespace

// The session's devices as their driver reports them, with the session's memory quota as their size.
Outcome serveGetDevices(ServeContext& c, CallInput in) {
  if (!in.args.exhausted()) return c.malformed("flytGetDevices: trailing arguments");
  const auto& d = c.driver();
  api::cu::DeviceSnapshot head;
  head.deviceCount = static_cast<std::uint32_t>(std::min<int>(c.deviceCount(), api::cu::kMaxDevices));
  Outcome out;
  if (d.cuDriverGetVersion == nullptr || (out.error = d.cuDriverGetVersion(&head.driverVersion)) != CUDA_SUCCESS) {
    if (out.error == CUDA_SUCCESS) out.error = CUDA_ERROR_NOT_SUPPORTED;
    return out;
  }
  std::vector<api::cu::DeviceInfo> devices(head.deviceCount);
  for (std::uint32_t i = 0; i < head.deviceCount; ++i) {
    auto& info = devices[i];
    CUdevice device = 0;
    if ((out.error = d.cuDeviceGet(&device, static_cast<int>(i))) != CUDA_SUCCESS) return out;
    if ((out.error = d.cuDeviceGetName(info.name, sizeof info.name, device)) != CUDA_SUCCESS) return out;
    if ((out.error = d.cuDeviceGetUuid_v2(&info.uuid, device)) != CUDA_SUCCESS) return out;
    if ((out.error = d.cuDeviceGetPCIBusId(info.pciBusId, sizeof info.pciBusId, device)) != CUDA_SUCCESS) return out;
    std::size_t total = 0;
    if ((out.error = d.cuDeviceTotalMem_v2(&total, device)) != CUDA_SUCCESS) return out;
    info.totalMemory = c.quota().limited() ? std::min<std::uint64_t>(total, c.quota().limit()) : total;
    for (std::uint32_t a = 1; a < api::cu::kAttributeSlots; ++a) {
      info.attributeResults[a] = d.cuDeviceGetAttribute(&info.attributes[a], static_cast<CUdevice_attribute>(a), device);
    }
    if (i == 0 && c.grantedSms != 0) info.attributes[CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT] = int(c.grantedSms);
  }
  api::ArgWriter writer(out.results);
  writer.put(head);
  for (const auto& info : devices) writer.put(info);
  return out;
}

// Memory as the session sees it, with NVML's readings of the GPU where the node has them. Without
// NVML (the stand-in, a host without NVIDIA's NVML): the device's size (or the quota) and what the
// session holds.
Outcome serveDeviceStatus(ServeContext& c, CallInput in) {
  CUdevice device = 0;
  if (auto refused = readDevice(c, in, "flytGetDeviceStatus", device)) return *refused;
  Outcome out;
  char busId[32] = {};
  std::optional<api::cu::DeviceStatus> reading;
  if (c.readsGpu && c.driver().cuDeviceGetPCIBusId(busId, sizeof busId, device) == CUDA_SUCCESS) reading = readGpu(busId);
  api::cu::DeviceStatus status;
  if (reading) {
    status = *reading;
  } else {
    std::size_t total = 0;
    if ((out.error = c.driver().cuDeviceTotalMem_v2(&total, device)) != CUDA_SUCCESS) return out;
    status.totalBytes = total;
    status.usedBytes = std::min<std::uint64_t>(c.quota().used(), total);
    status.freeBytes = total - status.usedBytes;
  }
  if (c.quota().limited()) {
    status.totalBytes = std::min(status.totalBytes, c.quota().limit());
    status.usedBytes = std::min(c.quota().used(), status.totalBytes);
    status.freeBytes = std::min<std::uint64_t>(status.freeBytes, c.quota().remaining());
  }
  api::ArgWriter writer(out.results);
  writer.put(status);
  return out;
}

Outcome serveSetContext(ServeContext& c, CallInput in) {
  CUcontext context{};
  if (!in.args.get(context) || !in.args.exhausted()) return c.malformed("flytSetContext: bad arguments");
  CUcontext real{};
  if (auto refused = c.handles().use("flytSetContext", "context", context, {HandleKind::context}, &real)) return *refused;
  Outcome out;
  out.error = c.driver().cuCtxSetCurrent(real);
  return out;
}

// The session holds at most one real retain per device; the application's retains are counted by
// the client. Under an SM share device 0's primary context is the session's green context.
Outcome servePrimaryRetain(ServeContext& c, CallInput in) {
  CUdevice device = 0;
  if (auto refused = readDevice(c, in, "cuDevicePrimaryCtxRetain", device)) return *refused;
  Outcome out;
  auto held = c.retainedPrimaries.find(device);
  CUcontext context{};
  if (held != c.retainedPrimaries.end()) {
    context = held->second;
  } else if (device == 0 && c.green) {
    context = c.green->context;
    c.retainedPrimaries[device] = context;
  } else {
    if ((out.error = c.driver().cuDevicePrimaryCtxRetain(&context, device)) != CUDA_SUCCESS) return out;
    c.retainedPrimaries[device] = context;
  }
  api::ArgWriter(out.results).put(c.handles().lookup(HandleKind::context, context));
  return out;
}

// The primary context goes when its last retain does (the worker may hold one of its own, for
// registered host memory): then so do the session's allocations in it.
Outcome servePrimaryRelease(ServeContext& c, CallInput in) {
  CUdevice device = 0;
  if (auto refused = readDevice(c, in, "cuDevicePrimaryCtxRelease_v2", device)) return *refused;
  Outcome out;
  auto held = c.retainedPrimaries.find(device);
  if (held == c.retainedPrimaries.end()) return out;
  const CUcontext primary = held->second;
  c.retainedPrimaries.erase(held);
  if (device == 0 && c.green) return out;  // the session's green context lives as long as the session
  if ((out.error = c.driver().cuDevicePrimaryCtxRelease_v2(device)) != CUDA_SUCCESS) return out;
  unsigned flags = 0;
  int active = 1;
  if (c.driver().cuDevicePrimaryCtxGetState == nullptr ||
      c.driver().cuDevicePrimaryCtxGetState(device, &flags, &active) != CUDA_SUCCESS || active == 0) {
    c.contextGone(primary);
  }
  return out;
}

// Everything the session had in the context is gone with it. A primary context the session holds
// no retain of holds none of its allocations: only a retain gives the session its id.
Outcome servePrimaryReset(ServeContext& c, CallInput in) {
  CUdevice device = 0;
  if (auto refused = readDevice(c, in, "cuDevicePrimaryCtxReset_v2", device)) return *refused;
  Outcome out;
  if (device == 0 && c.green) {
    // A green context cannot be reset: its work is finished, and what it holds stays (as under the
    // runtime cut's share; README, "SM shares").
    if ((out.error = c.driver().cuCtxPushCurrent_v2(c.green->context)) != CUDA_SUCCESS) return out;
    out.error = c.driver().cuCtxSynchronize();
    CUcontext popped{};
    (void)c.driver().cuCtxPopCurrent_v2(&popped);
    return out;
  }
  out.error = c.driver().cuDevicePrimaryCtxReset_v2(device);
  if (auto held = c.retainedPrimaries.find(device); out.error == CUDA_SUCCESS && held != c.retainedPrimaries.end()) {
    c.contextGone(held->second);
  }
  return out;
}

Outcome serveContextCreate(ServeContext& c, CallInput in) {
  std::uint32_t flags = 0;
  std::int32_t ordinal = 0;
  if (!in.args.get(flags) || !in.args.get(ordinal) || !in.args.exhausted()) return c.malformed("cuCtxCreate: bad arguments");
  CUdevice device = ordinal;
  if (auto refused = c.deviceOrdinal("cuCtxCreate", "dev", &device)) return *refused;
  if (c.driver().cuCtxCreate_v4 == nullptr) return c.unsupported("cuCtxCreate_v4");
  Outcome out;
  CUcontext context{};
  if (device == 0 && c.green) {
    // Another context on the share's SMs (the creation flags have no green-context counterpart).
    auto made = anotherGreenContext(greenContextApi(c.driver()), *c.green, 0);
    if (!made) {
      out.error = CUDA_ERROR_OUT_OF_MEMORY;
      out.detail = fmt::format("cuCtxCreate under the session's SM share: {}", made.error().message);
      return out;
    }
    context = made->context;
    c.greenCreated[context] = made->green;
    // Current afterwards, as cuCtxCreate makes the context it creates (the client counts on it).
    if ((out.error = c.driver().cuCtxSetCurrent(context)) != CUDA_SUCCESS) return out;
  } else if ((out.error = c.driver().cuCtxCreate_v4(&context, nullptr, flags, device)) != CUDA_SUCCESS) {
    return out;
  }
  api::ArgWriter(out.results).put(c.handles().create(HandleKind::context, context));
  return out;
}

Outcome serveContextDestroy(ServeContext& c, CallInput in) {
  CUcontext context{};
  if (!in.args.get(context) || !in.args.exhausted()) return c.malformed("cuCtxDestroy_v2: bad arguments");
  CUcontext real{};
  if (auto refused = c.handles().use("cuCtxDestroy_v2", "ctx", context, {HandleKind::context}, &real)) return *refused;
  if (real == nullptr) return c.malformed("cuCtxDestroy_v2: a null context");
  for (const auto& [device, primary] : c.retainedPrimaries) {
    if (primary == real) return c.malformed("cuCtxDestroy_v2: a primary context");
  }
  Outcome out;
  if (auto green = c.greenCreated.find(real); green != c.greenCreated.end()) {
    if ((out.error = c.driver().cuGreenCtxDestroy(green->second)) == CUDA_SUCCESS) {
      c.greenCreated.erase(green);
      c.handles().destroy(context);
      c.contextGone(real);
    }
    return out;
  }
  if ((out.error = c.driver().cuCtxDestroy_v2(real)) == CUDA_SUCCESS) {
    c.handles().destroy(context);
    c.contextGone(real);
  }
  return out;
}

// The capture state of a stream, without its dependency list.
Outcome serveCaptureInfo(ServeContext& c, CallInput in) {
  CUstream stream{};
  if (!in.args.get(stream) || !in.args.exhausted()) return c.malformed("cuStreamGetCaptureInfo_v3: bad arguments");
  CUstream real{};
  if (auto refused = c.handles().use("cuStreamGetCaptureInfo_v3", "hStream", stream, {HandleKind::stream}, &real)) return *refused;
  if (c.driver().cuStreamGetCaptureInfo_v3 == nullptr) return c.unsupported("cuStreamGetCaptureInfo_v3");
  CUstreamCaptureStatus status{};
  cuuint64_t id = 0;
  CUgraph graph{};
  Outcome out;
  out.error = c.driver().cuStreamGetCaptureInfo_v3(real, &status, &id, &graph, nullptr, nullptr, nullptr);
  if (out.error != CUDA_SUCCESS) return out;
  api::ArgWriter writer(out.results);
  writer.put(static_cast<std::int32_t>(status));
  writer.put(static_cast<std::uint64_t>(id));
  writer.put(reinterpret_cast<std::uint64_t>(c.handles().lookup(HandleKind::graph, graph)));
  return out;
}

}  // namespace flyt::backend::cu
