// The driver session: each batched call is decoded and dispatched to its handler, the generated
// ones (cu_serve.inc, made from api/cuda.toml with their checks) or the hand-written ones
// (handlers.hpp); replies follow the batch engine's rule (batch_engine.hpp).
#include "driver_session.hpp"

#include <kj/exception.h>

#include "../batch_engine.hpp"
#include "../output_capture.hpp"
#include "../pinned_buffer.hpp"
#include "../session_region.hpp"
#include "driver_loader.hpp"
#include "flyt/backend/executor.hpp"
#include "flyt/backend/session_limits.hpp"
#include "flyt/transport/log.hpp"
#include "flyt/transport/region_protocol.hpp"
#include "handlers.hpp"
#include "standin_driver.hpp"

namespace flyt::backend {
namespace cu {

using api::cu::Method;

#include "cu_serve.inc"

namespace {

spdlog::logger& log() { return flyt::logger("worker"); }

class DriverSession final : public SessionHandler {
 public:
  DriverSession(const api::cu::DriverTable& driver, std::string description, std::uint64_t sessionId, int deviceCount,
                std::unique_ptr<OutputCapture> output, std::shared_ptr<MemoryQuota> quota, bool nvidiaDriver,
                SmShare share)
      : m_context(driver, sessionId, std::move(quota), deviceCount), m_description(std::move(description)),
        m_sessionId(sessionId), m_engine(sessionId), m_output(std::move(output)) {
    m_context.readsGpu = nvidiaDriver;
    m_context.replyStaging = m_replyStaging.get();
    m_context.green = share.green;
    m_context.grantedSms = share.grantedSms;
  }

  ~DriverSession() override {
    // Unregister the region's segments and the staging buffers while the driver's contexts live.
    m_region.reset();
    m_received.reset();
    m_replyStaging.reset();
    m_copyBounce.reset();
    if (m_registrationContext != nullptr) (void)m_context.driver().cuDevicePrimaryCtxRelease_v2(0);
    for (const auto& [context, green] : m_context.greenCreated) (void)m_context.driver().cuGreenCtxDestroy(green);
    if (m_context.green) (void)m_context.driver().cuGreenCtxDestroy(m_context.green->green);
  }

  transport::Result<SessionState> handle(transport::Incoming& message, transport::Channel& channel) override {
    m_context.maxReplyPayload = channel.maxPayloadBytes();
    if (!m_sinkInstalled) {
      installPayloadSink(channel);
      m_sinkInstalled = true;
    }
    std::optional<transport::Result<SessionState>> answer;
    kj::Maybe<kj::Exception> problem = kj::runCatchingExceptions([&] {
      auto envelope = message.root<wire::Envelope>();
      if (envelope.isGoodbye()) {
        log().info("session {:016x}: goodbye ({})", m_sessionId, envelope.getGoodbye().getReason().cStr());
        answer = SessionState::kEnded;
      } else if (envelope.isBatch()) {
        const auto payload = message.payload();
        auto handled = m_engine.handle(
            envelope.getBatch(), channel, [&](wire::Call::Reader call) { return execute(call, payload); },
            [&](std::size_t limit) { return m_output ? m_output->drain(limit) : std::string(); });
        if (handled) {
          answer = SessionState::kOpen;
        } else {
          answer = std::unexpected(handled.error());
        }
      } else if (envelope.isRegionUpdate()) {
        answer = handleRegionUpdate(envelope.getRegionUpdate(), channel);
      }
    });
    if (problem != nullptr || !answer) {
      return transport::fail(transport::Errc::kMalformed,
                             fmt::format("session {:016x}: undecodable or unexpected message", m_sessionId));
    }
    return *answer;
  }

 private:
  // Host memory is registered with the driver in device 0's primary context, retained for as long
  // as the session lives (not in whatever context the application made current last, which it may
  // destroy). PORTABLE makes the registration count in every context; DEVICEMAP lets kernels reach it.
  bool registerHost(void* base, std::size_t bytes) {
    const auto& d = m_context.driver();
    if (m_registrationContext == nullptr && d.cuDevicePrimaryCtxRetain(&m_registrationContext, 0) != CUDA_SUCCESS) {
      m_registrationContext = nullptr;
      log().warn("session {:016x}: no context to register host memory in", m_sessionId);
      return false;
    }
    if (d.cuCtxPushCurrent_v2(m_registrationContext) != CUDA_SUCCESS) return false;
    const CUresult error =
        d.cuMemHostRegister_v2(base, bytes, CU_MEMHOSTREGISTER_PORTABLE | CU_MEMHOSTREGISTER_DEVICEMAP);
    CUcontext popped = nullptr;
    (void)d.cuCtxPopCurrent_v2(&popped);
    if (error != CUDA_SUCCESS) {
      log().warn("session {:016x}: cuMemHostRegister of {} bytes failed: error {}", m_sessionId, bytes,
                 static_cast<int>(error));
    }
    return error == CUDA_SUCCESS;
  }
  void unregisterHost(void* base) {
    if (auto mapped = m_mappedHost.find(base); mapped != m_mappedHost.end()) {
      m_context.removeMappedHost(mapped->second);
      m_mappedHost.erase(mapped);
    }
    const auto& d = m_context.driver();
    const bool pushed = m_registrationContext != nullptr && d.cuCtxPushCurrent_v2(m_registrationContext) == CUDA_SUCCESS;
    (void)d.cuMemHostUnregister(base);
    CUcontext popped = nullptr;
    if (pushed) (void)d.cuCtxPopCurrent_v2(&popped);
  }

  // flytRegionDevicePointer, args {u32 segment} -> results {u64 device address of the segment's first
  // byte, u64 its size}: for cuMemHostGetDevicePointer on the application's pinned memory (interpose/driver/
  // host_memory.cpp). The worker maps a segment at the application's address where it can
  // (segment.hpp), so that the answer is usually the host address itself, as under unified
  // addressing. From then on the segment may be named as device memory by copies and memsets.
  Outcome serveRegionDevicePointer(CallInput in) {
    std::uint32_t segment = 0;
    if (!in.args.get(segment) || !in.args.exhausted()) return m_context.malformed("flytRegionDevicePointer: bad arguments");
    auto bytes = m_region.hostMemorySegment(segment);
    if (!bytes) {
      Outcome out;
      out.error = CUDA_ERROR_INVALID_VALUE;
      out.detail = fmt::format("flytRegionDevicePointer: segment {} is no pinned host memory of this session", segment);
      return out;
    }
    Outcome out;
    CUdeviceptr device = 0;
    auto found = m_mappedHost.find(bytes->data());
    if (found != m_mappedHost.end()) {
      device = found->second;
    } else {
      const auto& d = m_context.driver();
      if (d.cuMemHostGetDevicePointer_v2 == nullptr) return m_context.unsupported("cuMemHostGetDevicePointer_v2");
      const bool pushed = m_registrationContext != nullptr && d.cuCtxPushCurrent_v2(m_registrationContext) == CUDA_SUCCESS;
      out.error = d.cuMemHostGetDevicePointer_v2(&device, bytes->data(), 0);
      CUcontext popped = nullptr;
      if (pushed) (void)d.cuCtxPopCurrent_v2(&popped);
      if (out.error != CUDA_SUCCESS) return out;
      m_context.addMappedHost(device, bytes->size());
      m_mappedHost.emplace(bytes->data(), device);
    }
    api::ArgWriter writer(out.results);
    writer.put(static_cast<std::uint64_t>(device));
    writer.put(static_cast<std::uint64_t>(bytes->size()));
    return out;
  }

  // The client maps its data-region segments (shm sessions only) and announces them; each is mapped
  // here and registered, so copies naming it are single DMAs (interpose/driver/copies.cpp).
  transport::Result<SessionState> handleRegionUpdate(wire::RegionUpdate::Reader update, transport::Channel& channel) {
    if (auto answered = m_region.update(update, channel); !answered) return std::unexpected(answered.error());
    return SessionState::kOpen;
  }

  // Over TCP, large payloads (host-to-device copies) are received straight into one page-locked
  // buffer, so the copy that follows is a single DMA. It is reused for every message: the worker
  // handles one message at a time and drops it before receiving the next (PayloadSink's contract).
  void installPayloadSink(transport::Channel& channel) {
    if (channel.sharesHostMemory()) {
      m_context.copyBounce = m_copyBounce.get();
      return;
    }
    channel.setPayloadSink([this](capnp::MessageReader&, std::size_t bytes) -> transport::Result<std::span<std::byte>> {
      auto buffer = m_received->get(bytes);
      if (buffer.size() != bytes) {
        return transport::fail(transport::Errc::kSystem, fmt::format("no memory for a {}-byte payload", bytes));
      }
      return buffer;
    });
  }

  // Copies between the device and host memory may name bytes of the data region instead of inline
  // bytes; nothing else may (an image or a parameter block is read from the message, which the
  // client cannot change while the worker checks it).
  static bool takesRegionBulk(Method method) {
    return method == Method::cuMemcpyHtoD_v2 || method == Method::cuMemcpyHtoDAsync_v2 ||
           method == Method::cuMemcpyDtoH_v2 || method == Method::cuMemcpyDtoHAsync_v2;
  }

  Outcome execute(wire::Call::Reader call, std::span<const std::byte> payload) {
    const auto* info = api::cu::methodInfo(call.getMethod());
    if (info == nullptr) {
      Outcome out;
      out.status = wire::TransportStatus::UNSUPPORTED;
      out.error = CUDA_ERROR_NOT_SUPPORTED;
      out.detail = fmt::format("unknown driver method id {}", call.getMethod());
      return out;
    }
    std::span<const std::byte> bulk;
    std::span<std::byte> region;
    bool persists = false;
    if (call.hasBulk() && call.getBulk().size() != 0) {
      auto ref = call.getBulk()[0];
      if (call.getBulk().size() != 1) return m_context.malformed(fmt::format("{}: more than one bulk reference", info->name));
      if (ref.getSegment() != wire::INLINE_SEGMENT) {
        if (!takesRegionBulk(info->method)) {
          return m_context.malformed(fmt::format("{}: a bulk reference into the data region", info->name));
        }
        auto resolved = m_region.resolve(ref.getSegment(), ref.getOffset(), ref.getLength());
        if (!resolved) return m_context.malformed(fmt::format("{}: {}", info->name, resolved.error()));
        region = resolved->bytes;
        bulk = region;
        persists = resolved->persists;
      } else {
        if (ref.getOffset() > payload.size() || ref.getLength() > payload.size() - ref.getOffset()) {
          return m_context.malformed(fmt::format("{}: a bulk reference outside the message's inline bytes", info->name));
        }
        bulk = payload.subspan(ref.getOffset(), ref.getLength());
      }
    }
    capnp::Data::Reader data = call.hasArgs() ? call.getArgs().getAs<capnp::Data>() : capnp::Data::Reader();
    api::ArgReader args({reinterpret_cast<const std::byte*>(data.begin()), data.size()});
    CallInput in{args, bulk, region, persists};
    auto& c = m_context;
    switch (info->method) {
#define FLYT_SERVE(name) \
  case Method::name: return serve_##name(c, args);
      FLYT_CU_SERVED(FLYT_SERVE)
#undef FLYT_SERVE
      case Method::flytGetDevices: return serveGetDevices(c, in);
      case Method::flytGetDeviceStatus: return serveDeviceStatus(c, in);
      case Method::flytGetParamLayout: return serveParamLayout(c, in);
      case Method::flytSetContext: return serveSetContext(c, in);
      case Method::flytRegionDevicePointer: return serveRegionDevicePointer(in);
      case Method::cuDevicePrimaryCtxRetain: return servePrimaryRetain(c, in);
      case Method::cuDevicePrimaryCtxRelease_v2: return servePrimaryRelease(c, in);
      case Method::cuDevicePrimaryCtxReset_v2: return servePrimaryReset(c, in);
      case Method::cuCtxCreate_v4: return serveContextCreate(c, in);
      case Method::cuCtxDestroy_v2: return serveContextDestroy(c, in);
      case Method::cuStreamGetCaptureInfo_v3: return serveCaptureInfo(c, in);
      case Method::cuMemcpyHtoD_v2: return serveCopyToDevice(c, in, false);
      case Method::cuMemcpyHtoDAsync_v2: return serveCopyToDevice(c, in, true);
      case Method::cuMemcpyDtoH_v2: return serveCopyToHost(c, in, false);
      case Method::cuMemcpyDtoHAsync_v2: return serveCopyToHost(c, in, true);
      case Method::cuMemcpy2D_v2: return serveCopy2D(c, in, false);
      case Method::cuMemcpy2DAsync_v2: return serveCopy2D(c, in, true);
      case Method::cuMemGetInfo_v2: return serveMemGetInfo(c, in);
      case Method::cuMemAllocPitch_v2: return serveAllocPitch(c, in);
      case Method::cuMemPoolSetAttribute: return servePoolAttribute(c, in, true);
      case Method::cuMemPoolGetAttribute: return servePoolAttribute(c, in, false);
      case Method::flytUploadImage: return serveUploadImage(c, in);
      case Method::cuModuleLoadData: return serveLoadImage(c, in, false);
      case Method::cuLibraryLoadData: return serveLoadImage(c, in, true);
      case Method::cuModuleGetFunction: return serveGetFunction(c, in);
      case Method::cuModuleEnumerateFunctions: return serveEnumerateFunctions(c, in);
      case Method::cuLibraryGetKernel: return serveGetKernel(c, in);
      case Method::cuKernelGetFunction: return serveKernelFunction(c, in);
      case Method::cuModuleGetGlobal_v2: return serveGetGlobal(c, in, false);
      case Method::cuLibraryGetGlobal: return serveGetGlobal(c, in, true);
      case Method::cuLaunchKernel: return serveLaunch(c, in, false);
      case Method::cuLaunchKernelEx: return serveLaunch(c, in, true);
      case Method::cuOccupancyMaxActiveClusters: return serveActiveClusters(c, in);
      case Method::cuGraphAddKernelNode_v2: return serveGraphAddKernelNode(c, in);
      case Method::cuGraphExecKernelNodeSetParams_v2: return serveGraphExecKernelNodeSetParams(c, in);
      case Method::cuGraphAddMemsetNode: return serveGraphAddMemsetNode(c, in);
      case Method::cuGraphAddMemcpyNode: return serveGraphAddMemcpyNode(c, in);
      case Method::cuGraphAddEmptyNode: return serveGraphAddEmptyNode(c, in);
      case Method::cuGraphGetNodes: return serveGraphGetNodes(c, in);
      case Method::cuTexObjectCreate: return serveTexObjectCreate(c, in);
      case Method::cuTexObjectDestroy: return serveObjectDestroy(c, in, false);
      case Method::cuSurfObjectCreate: return serveSurfObjectCreate(c, in);
      case Method::cuSurfObjectDestroy: return serveObjectDestroy(c, in, true);
      case Method::cuMemAddressReserve: return serveAddressReserve(c, in);
      case Method::cuMemAddressFree: return serveAddressFree(c, in);
      case Method::cuMemCreate: return serveMemCreate(c, in);
      case Method::cuMemRelease: return serveMemRelease(c, in);
      case Method::cuMemMap: return serveMemMap(c, in);
      case Method::cuMemUnmap: return serveMemUnmap(c, in);
      case Method::cuMemSetAccess: return serveSetAccess(c, in);
      case Method::cuMemGetAllocationPropertiesFromHandle: return serveAllocationProperties(c, in);
      default: {
        Outcome out;
        out.status = wire::TransportStatus::UNSUPPORTED;
        out.error = CUDA_ERROR_NOT_SUPPORTED;
        out.detail = fmt::format("{} is not served by this worker", info->name);
        return out;
      }
    }
  }

  ServeContext m_context;
  std::string m_description;
  std::uint64_t m_sessionId;
  BatchEngine<Outcome> m_engine;
  std::unique_ptr<OutputCapture> m_output;
  // Region segments whose device address was asked for (flytRegionDevicePointer): host base -> device
  // address. Declared before m_region, whose unmapping callback erases from it.
  std::map<void*, CUdeviceptr> m_mappedHost;
  SessionRegion m_region{m_sessionId, [this](void* base, std::size_t bytes) { return registerHost(base, bytes); },
                         [this](void* base) { unregisterHost(base); }};
  CUcontext m_registrationContext = nullptr;  // device 0's primary, retained when registration needed it
  bool m_sinkInstalled = false;
  // TCP payloads are received into m_received; device-to-host bytes returned inline leave from
  // m_replyStaging; inline host-to-device bytes over shared memory bounce through m_copyBounce. One
  // message is handled at a time and every copy from a bounce is complete when its call is done,
  // so one of each suffices.
  std::unique_ptr<PinnedBuffer> m_received = pinnedBuffer();
  std::unique_ptr<PinnedBuffer> m_replyStaging = pinnedBuffer();
  std::unique_ptr<PinnedBuffer> m_copyBounce = pinnedBuffer();

  std::unique_ptr<PinnedBuffer> pinnedBuffer() {
    return std::make_unique<PinnedBuffer>([this](void* base, std::size_t bytes) { return registerHost(base, bytes); },
                                          [this](void* base) { unregisterHost(base); }, m_sessionId);
  }
};

}  // namespace
}  // namespace cu

namespace cu {
namespace {

// The session's SM share: under MPS the driver enforces it (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, set
// by the node) and reports the SMs itself; otherwise a green context of the granted SMs stands in
// for device 0's primary context (serve_contexts.cpp). The stand-in reports the share it would get.
transport::Result<SmShare> smShare(const api::cu::DriverTable& driver, const SessionLimits& limits, bool standIn) {
  SmShare share;
  if (!limits.sharesSms()) return share;
  if (standIn) {
    share.grantedSms = limits.mps ? mpsSmCount(kStandInMultiprocessors, limits.smPercent)
                                  : greenContextSmCount(kStandInMultiprocessors, limits.smPercent, 8);
    return share;
  }
  if (limits.mps) return share;
  auto made = makeGreenContext(greenContextApi(driver), 0, limits.smPercent, false);
  if (!made) {
    return transport::fail(transport::Errc::kUnsupported, fmt::format("cannot confine the session to {} % of the SMs: {}",
                                                                      limits.smPercent, made.error().message));
  }
  share.green = *made;
  share.grantedSms = made->smCount;
  return share;
}

}  // namespace
}  // namespace cu

transport::Result<std::unique_ptr<SessionHandler>> makeDriverSessionHandler(const transport::HelloInfo& hello,
                                                                            const SessionOptions& options) {
  const api::cu::DriverTable* driver = nullptr;
  std::string description;
  if (options.executor != ExecutorKind::kStandIn) {
    auto loaded = cu::loadNvidiaDriver();
    if (loaded) {
      driver = *loaded;
      description = "NVIDIA driver";
    } else if (options.executor == ExecutorKind::kCuda) {
      return transport::fail(transport::Errc::kUnavailable, fmt::format("no GPU: {}", loaded.error().message));
    } else {
      cu::log().warn("no GPU ({}): driver session {:016x} runs on the GPU stand-in (test double)",
                     loaded.error().message, hello.sessionId);
    }
  }
  if (driver == nullptr) {
    driver = &cu::standInDriver();
    description = "stand-in (host memory; test double, no GPU)";
    (void)driver->cuInit(0);
  }
  int deviceCount = 0;
  if (driver->cuDeviceGetCount(&deviceCount) != CUDA_SUCCESS || deviceCount <= 0) {
    return transport::fail(transport::Errc::kUnavailable, "the driver reports no device");
  }
  auto share = cu::smShare(*driver, options.limits, driver == &cu::standInDriver());
  if (!share) return std::unexpected(share.error());
  if (share->green) {
    description += fmt::format(", green context of {} of {} SMs", share->green->smCount, share->green->deviceSmCount);
  } else if (options.limits.sharesSms()) {
    description += fmt::format(", {} % of the SMs{}", options.limits.smPercent,
                               options.limits.mps ? " (MPS active thread percentage)" : "");
  }
  cu::log().info("driver session {:016x} from {} (pid {}) on {}, {} device(s)", hello.sessionId, hello.clientName,
                 hello.pid, description, deviceCount);
  std::unique_ptr<OutputCapture> output;
  if (options.captureOutput) {
    auto started = OutputCapture::start();
    if (started) {
      output = std::move(*started);
    } else {
      cu::log().warn("device printf stays on the worker's stdout: {}", started.error().describe());
    }
  }
  auto quota = options.memoryQuota ? options.memoryQuota : std::make_shared<MemoryQuota>(options.limits.memoryBytes);
  return std::unique_ptr<SessionHandler>(std::make_unique<cu::DriverSession>(*driver, std::move(description),
                                                                             hello.sessionId, deviceCount,
                                                                             std::move(output), std::move(quota),
                                                                             driver != &cu::standInDriver(), *share));
}

}  // namespace flyt::backend
