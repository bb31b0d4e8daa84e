// The session handler: decodes each call of a batch, validates it, runs it on the executor and
// answers. Generated functions are served by one template instantiated per method from
// flyt::api::Spec; hand-written ones (copies, device properties, modules and kernel launches) by
// the functions at the end.
//
// Reply rule (schema/session.capnp): a batch that wants a reply gets one Reply holding the results
// of every earlier call that failed since the last reply, then the result of its last call.
//
// Memory quota (memory_quota.hpp): the device allocations this worker serves are cudaMalloc,
// cudaMallocAsync (the requested size), cudaMallocPitch (pitch * height, as returned) and
// cudaMalloc3D (pitch * height * depth); each is charged to the session's quota, and given back by
// cudaFree/cudaFreeAsync and cudaDeviceReset. A request beyond the quota fails with
// cudaErrorMemoryAllocation before the executor is asked and leaves the session as it was. (Pitched
// allocations are checked first with their unpadded size, which is all that is known before the
// call; one whose padded size then does not fit is freed again and refused the same way.) Managed
// memory, arrays and memory pools are not served (cudaErrorNotSupported), so nothing else can
// allocate device memory. Not charged: module globals (__device__/__constant__ variables: the
// module's image, fixed by the program, not asked for at run time) and the context's own memory;
// host memory the worker registers (data-region segments, staging buffers, the application's
// pinned memory) is host memory that the GPU reads over the bus, not device memory.
// With a quota, cudaMemGetInfo reports total = quota and free = min(quota - used, the GPU's free),
// cudaGetDeviceProperties totalGlobalMem = quota; with an SM share, multiProcessorCount (and
// cudaDevAttrMultiProcessorCount) is the granted SM count. The client caches device properties
// per session; the SM share cannot change while a session lives, but a live change of the memory
// limit leaves the cached totalGlobalMem stale: cudaMemGetInfo is the live answer.
#include <fmt/format.h>
#include <kj/exception.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include "allocation_table.hpp"
#include "batch_engine.hpp"
#include "driver/driver_session.hpp"
#include "output_capture.hpp"
#include "flyt/backend/executor.hpp"
#include "flyt/backend/session_handler.hpp"
#include "flyt/transport/log.hpp"
#include "flyt/transport/region_protocol.hpp"
#include "pinned_buffer.hpp"
#include "session_region.hpp"
#include "flyt/wire/session.capnp.h"
#include "module_cache.hpp"

namespace flyt::backend {
namespace {

using api::Method;
using transport::Result;

spdlog::logger& log() { return flyt::logger("worker"); }


struct Outcome {
  std::uint64_t sequence = 0;
  cudaError_t error = cudaSuccess;
  wire::TransportStatus status = wire::TransportStatus::OK;
  std::string detail;
  std::vector<std::byte> results;
  std::vector<std::byte> payload;  // returned inline after the reply (device-to-host data)
  std::span<const std::byte> payloadView;  // instead of `payload`: bytes in a worker buffer

  [[nodiscard]] std::span<const std::byte> payloadBytes() const {
    return payloadView.empty() ? std::span<const std::byte>(payload) : payloadView;
  }

  [[nodiscard]] bool failed() const {
    return error != cudaSuccess || status != wire::TransportStatus::OK;
  }
};

Outcome malformed(std::string detail) {
  Outcome out;
  out.status = wire::TransportStatus::MALFORMED;
  out.error = cudaErrorInvalidValue;
  out.detail = std::move(detail);
  return out;
}

// Decoded storage for one argument of a generated function.
template <class Tag> struct Slot;
template <class T> struct Slot<api::Val<T>> {
  T value{};
  bool decode(api::ArgReader& r) { return r.get(value); }
  T pass() { return value; }
  void encode(api::ArgWriter&) const {}
};
template <class T> struct Slot<api::In<T>> {
  T value{};
  bool decode(api::ArgReader& r) { return r.get(value); }
  const T* pass() { return &value; }
  void encode(api::ArgWriter&) const {}
};
template <class T> struct Slot<api::Out<T>> {
  T value{};
  bool decode(api::ArgReader&) { return true; }
  T* pass() { return &value; }
  void encode(api::ArgWriter& w) const { w.put(value); }
};
template <class T> struct Slot<api::InOut<T>> {
  T value{};
  bool decode(api::ArgReader& r) { return r.get(value); }
  T* pass() { return &value; }
  void encode(api::ArgWriter& w) const { w.put(value); }
};

template <class List> struct SlotsOf;
template <class... Tags> struct SlotsOf<api::ArgList<Tags...>> {
  using type = std::tuple<Slot<Tags>...>;
};

class CallDispatcher final : public SessionHandler {
 public:
  CallDispatcher(std::unique_ptr<Executor> executor, std::uint64_t sessionId,
                 std::unique_ptr<OutputCapture> output, std::shared_ptr<MemoryQuota> quota)
      : m_executor(std::move(executor)), m_sessionId(sessionId), m_output(std::move(output)),
        m_quota(std::move(quota)) {}

  ~CallDispatcher() override {
    // Unregister region segments and the staging buffer while the executor (the context) lives.
    m_region.reset();
    m_received.reset();
    m_replyStaging.reset();
  }

  Result<SessionState> handle(transport::Incoming& message, transport::Channel& channel) override {
    if (!m_sinkInstalled) {
      installPayloadSink(channel);
      m_sinkInstalled = true;
    }
    std::optional<Result<SessionState>> answer;
    kj::Maybe<kj::Exception> problem = kj::runCatchingExceptions([&] {
      auto envelope = message.root<wire::Envelope>();
      if (envelope.isGoodbye()) {
        log().info("session {:016x}: goodbye ({})", m_sessionId, envelope.getGoodbye().getReason().cStr());
        if (m_output && m_output->undelivered() > 0) {
          log().warn("session {:016x}: {} bytes of device output printed after the application's last "
                     "synchronising call were not delivered", m_sessionId, m_output->undelivered());
        }
        answer = SessionState::kEnded;
      } else if (envelope.isBatch()) {
        answer = handleBatch(envelope.getBatch(), message.payload(), channel);
      } else if (envelope.isRegionUpdate()) {
        answer = handleRegionUpdate(envelope.getRegionUpdate(), channel);
      }
    });
    if (problem != nullptr || !answer) {
      return transport::fail(transport::Errc::kMalformed,
                             fmt::format("session {:016x}: undecodable or unexpected message",
                                         m_sessionId));
    }
    return *answer;
  }

 private:
  // The client maps its data-region segments (shm sessions only) and announces them; each is mapped
  // here and registered with the GPU, so copies naming it are single DMAs.
  Result<SessionState> handleRegionUpdate(wire::RegionUpdate::Reader update, transport::Channel& channel) {
    if (auto answered = m_region.update(update, channel); !answered) return std::unexpected(answered.error());
    return SessionState::kOpen;
  }

  // Over TCP, large payloads (host-to-device copies) are received straight into one page-locked
  // buffer, so the copy that follows is a single DMA. It is reused for every message: the worker
  // handles one message at a time and drops it before receiving the next (PayloadSink's contract).
  void installPayloadSink(transport::Channel& channel) {
    if (channel.sharesHostMemory()) return;
    channel.setPayloadSink([this](capnp::MessageReader&, std::size_t bytes) -> Result<std::span<std::byte>> {
      auto buffer = m_received->get(bytes);
      if (buffer.size() != bytes) {
        return transport::fail(transport::Errc::kSystem, fmt::format("no memory for a {}-byte payload", bytes));
      }
      return buffer;
    });
  }

  // The reply rule (batch_engine.hpp), with device printf captured meanwhile travelling with each
  // reply, so that it precedes whatever the application prints after synchronising.
  Result<SessionState> handleBatch(wire::Batch::Reader batch, std::span<const std::byte> payload,
                                   transport::Channel& channel) {
    auto handled = m_engine.handle(
        batch, channel, [&](wire::Call::Reader call) { return execute(call, payload); },
        [&](std::size_t limit) { return m_output ? m_output->drain(limit) : std::string(); });
    if (!handled) return std::unexpected(handled.error());
    return SessionState::kOpen;
  }

  Outcome execute(wire::Call::Reader call, std::span<const std::byte> payload) {
    const auto* info = api::methodInfo(call.getMethod());
    if (info == nullptr) {
      Outcome out;
      out.status = wire::TransportStatus::UNSUPPORTED;
      out.error = cudaErrorNotSupported;
      out.detail = fmt::format("unknown method id {}", call.getMethod());
      return out;
    }
    capnp::Data::Reader data = call.hasArgs() ? call.getArgs().getAs<capnp::Data>() : capnp::Data::Reader();
    api::ArgReader args({reinterpret_cast<const std::byte*>(data.begin()), data.size()});
    switch (info->method) {
#define FLYT_SERVE(name, params, names) \
  case Method::name: return serve<Method::name>(&Executor::name, args);
      FLYT_API_GENERATED_SIGNATURES(FLYT_SERVE)
#undef FLYT_SERVE
      case Method::cudaMemcpy: return serveCopy(args, call, payload, false);
      case Method::cudaGetDeviceProperties: return serveDeviceProperties(args);
      case Method::cudaMemcpyAsync: return serveCopy(args, call, payload, true);
      case Method::cudaMemcpy2D: return serveMemcpy2D(args, call, payload);
      case Method::cudaMemcpy2DAsync: return serveMemcpy2D(args, call, payload);
      // Kernel calls borrow these methods' ids (the mapping: interpose/src/launch_kernel.cpp).
      case Method::__cudaRegisterFatBinary: return serveModuleUpload(args, call, payload);
      case Method::__cudaRegisterFunction: return serveKernelLookup(args);
      case Method::cudaLaunchKernel: return serveLaunch(args);
      case Method::cudaGetSymbolAddress: return serveSymbol(args);
      // Kernel queries and extended launches (interpose/src/kernel_queries.cpp, launch_kernel.cpp).
      case Method::cudaLaunchKernelExC: return serveLaunchEx(args);
      case Method::cudaFuncGetAttributes: return serveFuncAttributes(args);
      case Method::cudaFuncSetAttribute: return serveFuncSetAttribute(args);
      case Method::cudaOccupancyMaxActiveBlocksPerMultiprocessor: return serveOccupancy(args);
      case Method::cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags: return serveOccupancy(args);
      case Method::cudaDeviceReset: return serveDeviceReset(args);
      case Method::cudaPointerGetAttributes: return servePointerAttributes(args);
      default: {
        Outcome out;
        out.status = wire::TransportStatus::UNSUPPORTED;
        out.error = cudaErrorNotSupported;
        out.detail = fmt::format("{} is not served by this worker", info->name);
        return out;
      }
    }
  }

  // ---- generated functions ----------------------------------------------------------------------

  template <Method M, class Fn>
  Outcome serve(Fn function, api::ArgReader& args) {
    typename SlotsOf<typename api::Spec<M>::Args>::type slots;
    const bool decoded = std::apply([&](auto&... slot) { return (slot.decode(args) && ...); }, slots);
    if (!decoded || !args.exhausted()) {
      return malformed(fmt::format("{}: arguments of the wrong size", api::methodInfo(M).name));
    }
    if (auto refusal = validate<M>(slots); refusal) return malformed(std::move(*refusal));
    if constexpr (kAllocates<M>) {
      if (const std::uint64_t least = leastBytes<M>(slots); !m_quota->fits(least)) {
        return overQuota(api::methodInfo(M).name, least);
      }
    }
    Outcome out;
    out.error = std::apply([&](auto&... slot) { return (m_executor.get()->*function)(slot.pass()...); },
                           slots);
    if (out.error == cudaSuccess) {
      if constexpr (kAllocates<M>) {
        if (auto refusal = charge<M>(slots); refusal) return std::move(*refusal);
      }
      answerWithLimits<M>(slots);
      remember<M>(slots);
      api::ArgWriter writer(out.results);
      std::apply([&](const auto&... slot) { (slot.encode(writer), ...); }, slots);
    }
    return out;
  }

  // ---- the memory quota and the SM share ----------------------------------------------------------

  template <Method M>
  static constexpr bool kAllocates = M == Method::cudaMalloc || M == Method::cudaMallocAsync ||
                                     M == Method::cudaMallocPitch || M == Method::cudaMalloc3D;

  static std::uint64_t product(std::uint64_t a, std::uint64_t b) {
    return b != 0 && a > UINT64_MAX / b ? UINT64_MAX : a * b;  // saturating: never fits a quota
  }

  // What an allocation costs at least, known before it is made.
  template <Method M, class Slots>
  static std::uint64_t leastBytes(const Slots& slots) {
    if constexpr (M == Method::cudaMalloc || M == Method::cudaMallocAsync) {
      return std::get<1>(slots).value;
    } else if constexpr (M == Method::cudaMallocPitch) {
      return product(std::get<2>(slots).value, std::get<3>(slots).value);
    } else {
      const cudaExtent& extent = std::get<1>(slots).value;
      return product(product(extent.width, extent.height), extent.depth);
    }
  }

  // The base and size of an allocation just made.
  template <Method M, class Slots>
  static std::pair<void*, std::uint64_t> madeAllocation(const Slots& slots) {
    if constexpr (M == Method::cudaMalloc || M == Method::cudaMallocAsync) {
      return {std::get<0>(slots).value, std::get<1>(slots).value};
    } else if constexpr (M == Method::cudaMallocPitch) {
      return {std::get<0>(slots).value, product(std::get<1>(slots).value, std::get<3>(slots).value)};
    } else {
      const cudaPitchedPtr& made = std::get<0>(slots).value;
      return {made.ptr, product(product(made.pitch, made.ysize), std::get<1>(slots).value.depth)};
    }
  }

  // Charges an allocation just made; one that does not fit (a pitch wider than the width, a limit
  // lowered meanwhile) is freed again and refused.
  template <Method M, class Slots>
  std::optional<Outcome> charge(const Slots& slots) {
    const auto [base, bytes] = madeAllocation<M>(slots);
    if (m_quota->tryCharge(bytes)) return std::nullopt;
    if constexpr (M == Method::cudaMallocAsync) {
      (void)m_executor->cudaFreeAsync(base, std::get<2>(slots).value);
    } else {
      (void)m_executor->cudaFree(base);
    }
    return overQuota(api::methodInfo(M).name, bytes);
  }

  Outcome overQuota(std::string_view name, std::uint64_t bytes) const {
    Outcome out;
    out.error = cudaErrorMemoryAllocation;
    out.detail = fmt::format("{} of {} bytes: beyond the session's memory quota ({} of {} bytes in use)", name,
                             bytes, m_quota->used(), m_quota->limit());
    log().debug("session {:016x}: refused {}", m_sessionId, out.detail);
    return out;
  }

  // The SMs this session may use; 0: the whole device (report what it says).
  std::uint32_t grantedSms() const { return m_executor->multiprocessorGrant(); }

  // Answers about the device's size describe the session's share of it.
  template <Method M, class Slots>
  void answerWithLimits(Slots& slots) {
    if constexpr (M == Method::cudaMemGetInfo) {
      if (m_quota->limited()) {
        std::get<0>(slots).value = std::min<std::uint64_t>(std::get<0>(slots).value, m_quota->remaining());
        std::get<1>(slots).value = m_quota->limit();
      }
    } else if constexpr (M == Method::cudaDeviceGetAttribute) {
      if (std::get<1>(slots).value == cudaDevAttrMultiProcessorCount && grantedSms() != 0) {
        std::get<0>(slots).value = static_cast<int>(grantedSms());
      }
    }
  }

  bool knownStream(cudaStream_t stream) const {
    return stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread ||
           m_streams.contains(stream);
  }
  bool knownEvent(cudaEvent_t event) const { return m_events.contains(event); }

  // Checks a decoded call before it runs: handles must be this session's, memory ranges inside its
  // allocations. Returns the reason for a refusal.
  template <Method M, class Slots>
  std::optional<std::string> validate(Slots& slots) {
    std::optional<std::string> refusal;
    std::apply(
        [&](auto&... slot) {
          ([&](auto& s) {
             using V = std::decay_t<decltype(s.value)>;
             if constexpr (std::is_same_v<V, cudaStream_t>) {
               if (!refusal && !std::is_same_v<std::decay_t<decltype(s)>, Slot<api::Out<V>>> &&
                   !knownStream(s.value)) {
                 refusal = fmt::format("stream {} is not one of this session's", fmt::ptr(s.value));
               }
             } else if constexpr (std::is_same_v<V, cudaEvent_t>) {
               if (!refusal && !std::is_same_v<std::decay_t<decltype(s)>, Slot<api::Out<V>>> &&
                   !knownEvent(s.value)) {
                 refusal = fmt::format("event {} is not one of this session's", fmt::ptr(s.value));
               }
             }
           }(slot), ...);
        },
        slots);
    if (refusal) return refusal;
    if constexpr (M == Method::cudaFree || M == Method::cudaFreeAsync) {
      void* base = std::get<0>(slots).value;
      if (base != nullptr && (!m_allocations.isBase(base) || m_modules.isGlobal(base))) {
        return fmt::format("cudaFree of {}, which is not an allocation of this session", fmt::ptr(base));
      }
    }
    if constexpr (M == Method::cudaMemset || M == Method::cudaMemsetAsync) {
      if (!m_allocations.contains(std::get<0>(slots).value, std::get<2>(slots).value)) {
        return fmt::format("memset of {} bytes at {} is outside this session's allocations",
                           std::get<2>(slots).value, fmt::ptr(std::get<0>(slots).value));
      }
    }
    if constexpr (M == Method::cudaMemset2D || M == Method::cudaMemset2DAsync) {
      const auto pitch = std::get<1>(slots).value;
      const auto width = std::get<3>(slots).value;
      const auto height = std::get<4>(slots).value;
      const bool fits = height == 0 || width == 0 ||
                        (width <= pitch && (height - 1) <= (SIZE_MAX - width) / (pitch == 0 ? 1 : pitch) &&
                         m_allocations.contains(std::get<0>(slots).value, pitch * (height - 1) + width));
      if (!fits) return std::string("2D memset outside this session's allocations");
    }
    // Generated and passed straight to the runtime by the CUDA executor, so their device pointers
    // must be checked here like cudaMemset's (a hostile client could otherwise write anywhere in
    // the worker's context).
    if constexpr (M == Method::cudaMemset3D || M == Method::cudaMemset3DAsync) {
      const cudaPitchedPtr& target = std::get<0>(slots).value;
      const cudaExtent& extent = std::get<2>(slots).value;
      if (extent.width != 0 && extent.height != 0 && extent.depth != 0 &&
          !holds3D(target.ptr, target.pitch, target.ysize, extent)) {
        return std::string("3D memset outside this session's allocations");
      }
    }
    if constexpr (M == Method::cudaMemcpyPeer) {
      const std::uint64_t count = std::get<4>(slots).value;
      if (!m_allocations.contains(std::get<0>(slots).value, count) ||
          !m_allocations.contains(std::get<2>(slots).value, count)) {
        return fmt::format("cudaMemcpyPeer of {} bytes outside this session's allocations", count);
      }
    }
    return std::nullopt;
  }

  // Updates the session's tables after a successful call.
  template <Method M, class Slots>
  void remember(Slots& slots) {
    if constexpr (M == Method::cudaMalloc || M == Method::cudaMallocAsync) {
      m_allocations.add(std::get<0>(slots).value, std::get<1>(slots).value);
    } else if constexpr (M == Method::cudaMallocPitch || M == Method::cudaMalloc3D) {
      const auto [base, bytes] = madeAllocation<M>(slots);
      m_allocations.add(base, bytes);
    } else if constexpr (M == Method::cudaFree || M == Method::cudaFreeAsync) {
      // validate() has checked that it is an allocation of the session (never a module global).
      m_quota->release(m_allocations.take(std::get<0>(slots).value));
    } else if constexpr (M == Method::cudaStreamCreate || M == Method::cudaStreamCreateWithFlags ||
                         M == Method::cudaStreamCreateWithPriority) {
      m_streams.insert(std::get<0>(slots).value);
    } else if constexpr (M == Method::cudaStreamDestroy) {
      m_streams.erase(std::get<0>(slots).value);
    } else if constexpr (M == Method::cudaEventCreate || M == Method::cudaEventCreateWithFlags) {
      m_events.insert(std::get<0>(slots).value);
    } else if constexpr (M == Method::cudaEventDestroy) {
      m_events.erase(std::get<0>(slots).value);
    }
  }

  // ---- hand-written functions -------------------------------------------------------------------

  // The host side of a copy: the call's one BulkRef, naming either the inline payload that followed
  // the message or bytes in the data region (a staging slot, or the application's pinned memory).
  struct HostBytes {
    std::span<std::byte> bytes;
    bool persists = false;  // the application's pinned memory: it outlives the call
  };
  // nullopt with `why` set when the reference is bad; an empty optional `why` means "no BulkRef".
  std::optional<HostBytes> hostBytes(wire::Call::Reader call, std::span<const std::byte> payload,
                                     std::uint64_t bytes, std::string& why) const {
    if (call.getBulk().size() != 1) {
      why = call.getBulk().size() == 0 ? "" : "more than one bulk reference";
      return std::nullopt;
    }
    auto ref = call.getBulk()[0];
    if (ref.getLength() != bytes) {
      why = fmt::format("bulk reference of {} bytes for a {}-byte copy", ref.getLength(), bytes);
      return std::nullopt;
    }
    if (ref.getSegment() == wire::INLINE_SEGMENT) {
      if (ref.getOffset() > payload.size() || bytes > payload.size() - ref.getOffset()) {
        why = fmt::format("payload reference {}+{} outside the {} inline bytes", ref.getOffset(), bytes,
                          payload.size());
        return std::nullopt;
      }
      // Inline bytes are only ever read (host-to-device): the span is const in spirit.
      auto* data = const_cast<std::byte*>(payload.data()) + ref.getOffset();
      return HostBytes{{data, bytes}, false};
    }
    auto resolved = m_region.resolve(ref.getSegment(), ref.getOffset(), bytes);
    if (!resolved) {
      why = resolved.error();
      return std::nullopt;
    }
    return HostBytes{resolved->bytes, resolved->persists};
  }

  static bool inlineRef(wire::Call::Reader call) {
    return call.getBulk().size() == 1 && call.getBulk()[0].getSegment() == wire::INLINE_SEGMENT;
  }

  // cudaMemcpy (stream 0) and cudaMemcpyAsync (interpose/src/memcpy.cpp).
  // args {u64 device, u64 bytes, i32 kind[, u64 stream (async only)][, u64 source for device-to-device]}.
  // Host-to-device: one BulkRef to the source (inline payload or region). Device-to-host: a BulkRef
  // into the region (a slot or pinned memory) receives the bytes; without one they return inline with
  // the reply. A synchronous copy is a cudaMemcpy on the worker; an asynchronous one is enqueued on
  // the stream, and the worker waits for it unless the host side is the application's pinned memory
  // (Executor::copyOnStream).
  Outcome serveCopy(api::ArgReader& args, wire::Call::Reader call, std::span<const std::byte> payload, bool async) {
    const char* name = async ? "cudaMemcpyAsync" : "cudaMemcpy";
    std::uint64_t device = 0, bytes = 0, stream = 0;
    std::int32_t kind = 0;
    if (!args.get(device) || !args.get(bytes) || !args.get(kind) || (async && !args.get(stream))) {
      return malformed(fmt::format("{}: short arguments", name));
    }
    auto* pointer = reinterpret_cast<void*>(static_cast<std::uintptr_t>(device));
    auto* handle = reinterpret_cast<cudaStream_t>(static_cast<std::uintptr_t>(stream));
    if (!knownStream(handle)) return malformed(fmt::format("stream {} is not one of this session's", fmt::ptr(handle)));
    Outcome out;
    std::string why;
    switch (kind) {
      case cudaMemcpyHostToDevice: {
        auto host = hostBytes(call, payload, bytes, why);
        if (!args.exhausted() || !host) return malformed(fmt::format("{}: {}", name, why.empty() ? "no source" : why));
        if (!m_allocations.contains(pointer, bytes)) return outside(name, pointer, bytes);
        out.error = async ? m_executor->copyOnStream(pointer, host->bytes.data(), bytes, cudaMemcpyHostToDevice,
                                                     handle, host->persists)
                          : m_executor->copyToDevice(pointer, host->bytes.data(), bytes);
        return out;
      }
      case cudaMemcpyDeviceToHost: {
        if (!args.exhausted()) return malformed(fmt::format("{}: trailing arguments", name));
        if (!m_allocations.contains(pointer, bytes)) return outside(name, pointer, bytes);
        std::span<std::byte> target;
        bool persists = false;
        if (call.getBulk().size() != 0) {
          auto host = inlineRef(call) ? std::nullopt : hostBytes(call, payload, bytes, why);
          if (!host) return malformed(fmt::format("{}: {}", name, why.empty() ? "an inline destination" : why));
          target = host->bytes;
          persists = host->persists;
        } else {
          // Returned inline: into the page-locked reply buffer (one DMA, no zero-filling), which
          // stays untouched until this reply has been sent.
          target = m_replyStaging->get(bytes);
          if (target.size() != bytes) return malformed(fmt::format("{}: no memory for {} bytes", name, bytes));
          out.payloadView = target;
        }
        out.error = async ? m_executor->copyOnStream(target.data(), pointer, bytes, cudaMemcpyDeviceToHost, handle,
                                                     persists)
                          : m_executor->copyToHost(target.data(), pointer, bytes);
        if (out.error != cudaSuccess) out.payloadView = {};
        return out;
      }
      case cudaMemcpyDeviceToDevice: {
        std::uint64_t source = 0;
        if (!args.get(source) || !args.exhausted()) return malformed(fmt::format("{}: bad device-to-device arguments", name));
        auto* from = reinterpret_cast<void*>(static_cast<std::uintptr_t>(source));
        if (!m_allocations.contains(pointer, bytes)) return outside(name, pointer, bytes);
        if (!m_allocations.contains(from, bytes)) return outside(name, from, bytes);
        out.error = async ? m_executor->copyOnStream(pointer, from, bytes, cudaMemcpyDeviceToDevice, handle)
                          : m_executor->copyOnDevice(pointer, from, bytes);
        return out;
      }
      default: return malformed(fmt::format("{}: kind {} is not served", name, kind));
    }
  }

  Outcome outside(const char* what, const void* pointer, std::uint64_t bytes) {
    Outcome out = malformed(fmt::format("{} {} bytes at {}: outside this session's allocations", what,
                                        bytes, fmt::ptr(pointer)));
    log().warn("session {:016x}: refused {}", m_sessionId, out.detail);
    return out;
  }

  // args {i32 device}; results: struct cudaDeviceProp (interpose/src/device_properties.cpp)
  Outcome serveDeviceProperties(api::ArgReader& args) {
    std::int32_t device = 0;
    if (!args.get(device) || !args.exhausted()) return malformed("cudaGetDeviceProperties: bad arguments");
    cudaDeviceProp prop{};
    Outcome out;
    out.error = m_executor->deviceProperties(&prop, device);
    if (out.error != cudaSuccess) return out;
    if (m_quota->limited()) prop.totalGlobalMem = m_quota->limit();
    if (grantedSms() != 0) prop.multiProcessorCount = static_cast<int>(grantedSms());
    api::ArgWriter(out.results).put(prop);
    return out;
  }

  // True when `depth` slices of `ysize` rows `pitch` apart, each of `width` bytes used in its first
  // `height` rows, lie in one allocation starting at `pointer`.
  bool holds3D(const void* pointer, std::uint64_t pitch, std::uint64_t ysize, const cudaExtent& extent) const {
    if (extent.width > pitch || extent.height > ysize || ysize == 0) return false;
    const std::uint64_t slice = product(pitch, ysize);
    const std::uint64_t lastRow = product(pitch, extent.height - 1);
    const std::uint64_t lastSlice = product(slice, extent.depth - 1);
    if (lastRow > UINT64_MAX - extent.width || lastSlice > UINT64_MAX - (lastRow + extent.width)) return false;
    return m_allocations.contains(pointer, lastSlice + lastRow + extent.width);
  }

  // True when `height` rows of `width` bytes, `pitch` apart from `pointer`, lie in one allocation.
  bool holds2D(const void* pointer, std::uint64_t pitch, std::uint64_t width, std::uint64_t height) const {
    if (width == 0 || height == 0) return true;
    if (width > pitch || height - 1 > (UINT64_MAX - width) / pitch) return false;
    return m_allocations.contains(pointer, pitch * (height - 1) + width);
  }

  // cudaMemcpy2D (stream 0) and cudaMemcpy2DAsync. args {u64 dst, u64 dpitch, u64 src, u64 spitch,
  // u64 width, u64 height, i32 kind, u64 stream}; the host side's address is 0 and its pitch is
  // `width`: its rows are packed in the inline payload (host-to-device) or the reply's payload.
  Outcome serveMemcpy2D(api::ArgReader& args, wire::Call::Reader call, std::span<const std::byte> payload) {
    std::uint64_t dst = 0, dpitch = 0, src = 0, spitch = 0, width = 0, height = 0, stream = 0;
    std::int32_t kind = 0;
    if (!args.get(dst) || !args.get(dpitch) || !args.get(src) || !args.get(spitch) || !args.get(width) ||
        !args.get(height) || !args.get(kind) || !args.get(stream) || !args.exhausted()) {
      return malformed("cudaMemcpy2D: bad arguments");
    }
    auto* to = reinterpret_cast<void*>(static_cast<std::uintptr_t>(dst));
    auto* from = reinterpret_cast<void*>(static_cast<std::uintptr_t>(src));
    auto* handle = reinterpret_cast<cudaStream_t>(static_cast<std::uintptr_t>(stream));
    if (!knownStream(handle)) return malformed(fmt::format("stream {} is not one of this session's", fmt::ptr(handle)));
    const bool hostSource = kind == cudaMemcpyHostToDevice;
    const bool hostDestination = kind == cudaMemcpyDeviceToHost;
    if (!hostSource && !hostDestination && kind != cudaMemcpyDeviceToDevice) {
      return malformed(fmt::format("cudaMemcpy2D: kind {} is not served", kind));
    }
    if ((hostSource && (src != 0 || spitch != width)) || (hostDestination && (dst != 0 || dpitch != width)) ||
        (width != 0 && height > UINT64_MAX / width)) {
      return malformed("cudaMemcpy2D: the host side must be packed rows");
    }
    if (!hostDestination && !holds2D(to, dpitch, width, height)) return outside("cudaMemcpy2D to", to, dpitch * height);
    if (!hostSource && !holds2D(from, spitch, width, height)) return outside("cudaMemcpy2D from", from, spitch * height);
    Outcome out;
    if (hostSource) {
      auto data = inlinePayload(call, payload);
      if (!data || data->size() != width * height) return malformed("cudaMemcpy2D: bad inline payload");
      out.error = m_executor->copy2DOnStream(to, dpitch, data->data(), width, width, height, cudaMemcpyHostToDevice, handle);
    } else if (hostDestination) {
      out.payload.resize(width * height);
      out.error = m_executor->copy2DOnStream(out.payload.data(), width, from, spitch, width, height, cudaMemcpyDeviceToHost, handle);
      if (out.error != cudaSuccess) out.payload.clear();
    } else {
      out.error = m_executor->copy2DOnStream(to, dpitch, from, spitch, width, height, cudaMemcpyDeviceToDevice, handle);
    }
    return out;
  }

  // The single inline payload a call refers to, checked to lie inside the message's payload.
  static std::optional<std::span<const std::byte>> inlinePayload(wire::Call::Reader call,
                                                                 std::span<const std::byte> payload) {
    if (call.getBulk().size() != 1) return std::nullopt;
    auto ref = call.getBulk()[0];
    if (ref.getSegment() != wire::INLINE_SEGMENT || ref.getOffset() > payload.size() ||
        ref.getLength() > payload.size() - ref.getOffset()) {
      return std::nullopt;
    }
    return payload.subspan(ref.getOffset(), ref.getLength());
  }

  Outcome refused(ModuleCache::Failure failure) {
    if (failure.malformed) return malformed(std::move(failure.detail));
    log().warn("session {:016x}: {}", m_sessionId, failure.detail);
    Outcome out;
    out.error = failure.error;
    out.detail = std::move(failure.detail);
    return out;
  }

  static std::string_view text(std::span<const std::byte> bytes) {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
  }

  // args {u64 hash, u64 total, u64 offset}, one inline payload; results (last chunk) {u64 module id}
  Outcome serveModuleUpload(api::ArgReader& args, wire::Call::Reader call, std::span<const std::byte> payload) {
    std::uint64_t hash = 0, total = 0, offset = 0;
    if (!args.get(hash) || !args.get(total) || !args.get(offset) || !args.exhausted()) {
      return malformed("fatbin upload: bad arguments");
    }
    if (offset == total && call.getBulk().size() == 0) {  // "have you got it?": {u64 module id or 0}
      auto module = m_modules.lookup(hash, total);
      if (!module) return refused(std::move(module.error()));
      Outcome out;
      api::ArgWriter(out.results).put(*module);
      return out;
    }
    auto chunk = inlinePayload(call, payload);
    if (!chunk) return malformed("fatbin upload: expected one inline payload inside the message");
    auto module = m_modules.receive(hash, total, offset, *chunk);
    if (!module) return refused(std::move(module.error()));
    Outcome out;
    if (*module != 0) api::ArgWriter(out.results).put(*module);
    return out;
  }

  // args {u64 module, name}; results {u64 kernel id, u32 count, count x {u32 offset, u32 size}}
  Outcome serveKernelLookup(api::ArgReader& args) {
    std::uint64_t module = 0;
    if (!args.get(module)) return malformed("kernel lookup: bad arguments");
    auto kernel = m_modules.kernel(module, text(args.rest()));
    if (!kernel) return refused(std::move(kernel.error()));
    Outcome out;
    api::ArgWriter writer(out.results);
    writer.put(kernel->id);
    writer.put(static_cast<std::uint32_t>(kernel->layout->size()));
    for (const auto& param : *kernel->layout) {
      writer.put(param.offset);
      writer.put(param.size);
    }
    return out;
  }

  // args {u64 kernel, dim3 grid, dim3 block, u64 sharedMem, u64 stream, packed parameters}
  Outcome serveLaunch(api::ArgReader& args) {
    std::uint64_t kernel = 0, sharedMem = 0, stream = 0;
    dim3 grid, block;
    if (!args.get(kernel) || !args.get(grid) || !args.get(block) || !args.get(sharedMem) || !args.get(stream)) {
      return malformed("kernel launch: short arguments");
    }
    auto* handle = reinterpret_cast<cudaStream_t>(static_cast<std::uintptr_t>(stream));
    if (!knownStream(handle)) return malformed(fmt::format("stream {} is not one of this session's", fmt::ptr(handle)));
    auto launched = m_modules.launch(kernel, grid, block, sharedMem, handle, args.rest());
    if (!launched) return refused(std::move(launched.error()));
    return Outcome{};
  }

  // args {u64 module, u64 registered size, name}; results {u64 address, u64 size}
  Outcome serveSymbol(api::ArgReader& args) {
    std::uint64_t module = 0, registered = 0;
    if (!args.get(module) || !args.get(registered)) return malformed("symbol lookup: bad arguments");
    auto global = m_modules.global(module, text(args.rest()), registered);
    if (!global) return refused(std::move(global.error()));
    m_allocations.add(global->address, global->bytes);
    Outcome out;
    api::ArgWriter writer(out.results);
    writer.put(static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(global->address)));
    writer.put(static_cast<std::uint64_t>(global->bytes));
    return out;
  }

  // args {u64 kernel, dim3 grid, dim3 block, u64 sharedMem, u64 stream, u32 flags (bit 0: cooperative),
  // dim3 cluster (all zero: none), packed parameters}
  Outcome serveLaunchEx(api::ArgReader& args) {
    std::uint64_t kernel = 0, sharedMem = 0, stream = 0;
    std::uint32_t flags = 0;
    dim3 grid, block, cluster;
    if (!args.get(kernel) || !args.get(grid) || !args.get(block) || !args.get(sharedMem) || !args.get(stream) ||
        !args.get(flags) || !args.get(cluster)) {
      return malformed("extended kernel launch: short arguments");
    }
    const bool clustered = cluster.x != 0 || cluster.y != 0 || cluster.z != 0;
    if ((flags & ~1U) != 0 || (clustered && (cluster.x == 0 || cluster.y == 0 || cluster.z == 0))) {
      return malformed(fmt::format("extended kernel launch: flags {:#x}, cluster ({},{},{})", flags, cluster.x,
                                   cluster.y, cluster.z));
    }
    auto* handle = reinterpret_cast<cudaStream_t>(static_cast<std::uintptr_t>(stream));
    if (!knownStream(handle)) return malformed(fmt::format("stream {} is not one of this session's", fmt::ptr(handle)));
    const Executor::LaunchOptions options{(flags & 1U) != 0, clustered ? cluster : dim3(0, 0, 0)};
    auto launched = m_modules.launch(kernel, grid, block, sharedMem, handle, args.rest(), &options);
    if (!launched) return refused(std::move(launched.error()));
    return Outcome{};
  }

  // args {u64 kernel}; results: struct cudaFuncAttributes
  Outcome serveFuncAttributes(api::ArgReader& args) {
    std::uint64_t kernel = 0;
    if (!args.get(kernel) || !args.exhausted()) return malformed("cudaFuncGetAttributes: bad arguments");
    auto handle = m_modules.handle(kernel);
    if (!handle) return refused(std::move(handle.error()));
    cudaFuncAttributes attributes{};
    Outcome out;
    out.error = m_executor->kernelAttributes(*handle, &attributes);
    if (out.error == cudaSuccess) api::ArgWriter(out.results).put(attributes);
    return out;
  }

  // args {u64 kernel, i32 attribute, i32 value}
  Outcome serveFuncSetAttribute(api::ArgReader& args) {
    std::uint64_t kernel = 0;
    std::int32_t attribute = 0, value = 0;
    if (!args.get(kernel) || !args.get(attribute) || !args.get(value) || !args.exhausted()) {
      return malformed("cudaFuncSetAttribute: bad arguments");
    }
    auto handle = m_modules.handle(kernel);
    if (!handle) return refused(std::move(handle.error()));
    Outcome out;
    out.error = m_executor->setKernelAttribute(*handle, static_cast<cudaFuncAttribute>(attribute), value);
    return out;
  }

  // Both occupancy methods: args {u64 kernel, i32 blockSize, u64 dynamicSMemSize, u32 flags}; results {i32}
  Outcome serveOccupancy(api::ArgReader& args) {
    std::uint64_t kernel = 0, sharedMem = 0;
    std::int32_t blockSize = 0;
    std::uint32_t flags = 0;
    if (!args.get(kernel) || !args.get(blockSize) || !args.get(sharedMem) || !args.get(flags) || !args.exhausted()) {
      return malformed("cudaOccupancyMaxActiveBlocksPerMultiprocessor: bad arguments");
    }
    auto handle = m_modules.handle(kernel);
    if (!handle) return refused(std::move(handle.error()));
    int blocks = 0;
    Outcome out;
    out.error = m_executor->occupancy(&blocks, *handle, blockSize, sharedMem, flags);
    if (out.error == cudaSuccess) api::ArgWriter(out.results).put(static_cast<std::int32_t>(blocks));
    return out;
  }

  // args {}. Modules are unloaded before the reset (their handles belong to the old context); the
  // session's allocations, streams and events die with it.
  Outcome serveDeviceReset(api::ArgReader& args) {
    if (!args.exhausted()) return malformed("cudaDeviceReset: trailing arguments");
    releaseSessionResources();
    m_modules.forgetAll();
    Outcome out;
    out.error = m_executor->deviceReset();
    m_allocations = AllocationTable{};
    m_quota->releaseAll();
    m_streams.clear();
    m_events.clear();
    log().info("session {:016x}: device reset ({})", m_sessionId, ::cudaGetErrorName(out.error));
    return out;
  }

  // Frees what the session allocated and created (module globals excepted: unloading frees them).
  void releaseSessionResources() {
    for (void* base : m_allocations.bases()) {
      if (!m_modules.isGlobal(base)) (void)m_executor->cudaFree(base);
    }
    for (cudaStream_t stream : m_streams) (void)m_executor->cudaStreamDestroy(stream);
    for (cudaEvent_t event : m_events) (void)m_executor->cudaEventDestroy(event);
  }

  // args {u64 pointer}; results: struct cudaPointerAttributes. Answered from the session's tables
  // only, never from the runtime, which would describe other sessions' memory on the same GPU.
  Outcome servePointerAttributes(api::ArgReader& args) {
    std::uint64_t address = 0;
    if (!args.get(address) || !args.exhausted()) return malformed("cudaPointerGetAttributes: bad arguments");
    auto* pointer = reinterpret_cast<void*>(static_cast<std::uintptr_t>(address));
    cudaPointerAttributes attributes{};
    attributes.type = cudaMemoryTypeUnregistered;
    if (pointer != nullptr && m_allocations.contains(pointer, 1)) {
      attributes.type = cudaMemoryTypeDevice;
      attributes.device = 0;
      attributes.devicePointer = pointer;
    }
    Outcome out;
    api::ArgWriter(out.results).put(attributes);
    return out;
  }

  std::unique_ptr<Executor> m_executor;
  ModuleCache m_modules{*m_executor};  // after m_executor: destroyed first, unloading through it
  std::uint64_t m_sessionId;
  std::unique_ptr<OutputCapture> m_output;  // null when stdout could not be captured
  std::shared_ptr<MemoryQuota> m_quota;  // never null
  AllocationTable m_allocations;
  std::set<cudaStream_t> m_streams;
  std::set<cudaEvent_t> m_events;
  BatchEngine<Outcome> m_engine{m_sessionId};
  SessionRegion m_region{m_sessionId,
                         [this](void* base, std::size_t bytes) {
                           return m_executor->registerHostMemory(base, bytes) == cudaSuccess;
                         },
                         [this](void* base) { (void)m_executor->unregisterHostMemory(base); }};
  bool m_sinkInstalled = false;
  // TCP payloads are received into m_received; device-to-host bytes returned inline leave from
  // m_replyStaging. One message is handled at a time, so one of each suffices.
  std::unique_ptr<PinnedBuffer> m_received = pinnedBuffer();
  std::unique_ptr<PinnedBuffer> m_replyStaging = pinnedBuffer();

  std::unique_ptr<PinnedBuffer> pinnedBuffer() {
    return std::make_unique<PinnedBuffer>(
        [this](void* base, std::size_t bytes) { return m_executor->registerHostMemory(base, bytes) == cudaSuccess; },
        [this](void* base) { (void)m_executor->unregisterHostMemory(base); }, m_sessionId);
  }
};

}  // namespace

Result<std::unique_ptr<SessionHandler>> makeSessionHandler(const transport::HelloInfo& hello,
                                                           const SessionOptions& options) {
  if (hello.api == transport::SessionApi::kDriver) return makeDriverSessionHandler(hello, options);
  std::unique_ptr<Executor> executor;
  if (options.executor != ExecutorKind::kStandIn) {
    auto made = makeCudaExecutor(options.limits);
    if (made) {
      executor = std::move(*made);
    } else if (options.executor == ExecutorKind::kCuda || made.error().code != transport::Errc::kUnavailable) {
      // A GPU whose share cannot be enforced is refused, never run whole (nor on the stand-in).
      return transport::fail(transport::Errc::kUnavailable,
                             made.error().code == transport::Errc::kUnavailable
                                 ? fmt::format("no GPU: {}", made.error().message)
                                 : made.error().message);
    } else {
      log().warn("no GPU ({}): session {:016x} runs on the GPU stand-in (test double)", made.error().message,
                 hello.sessionId);
    }
  }
  if (!executor) executor = makeStandInExecutor(options.limits);
  log().info("session {:016x} from {} (pid {}) on {}", hello.sessionId, hello.clientName, hello.pid,
             executor->describe());
  std::unique_ptr<OutputCapture> output;
  if (options.captureOutput) {
    auto started = OutputCapture::start();
    if (started) {
      output = std::move(*started);
    } else {
      log().warn("device printf stays on the worker's stdout: {}", started.error().describe());
    }
  }
  auto quota = options.memoryQuota ? options.memoryQuota : std::make_shared<MemoryQuota>(options.limits.memoryBytes);
  if (quota->limited() || executor->multiprocessorGrant() != 0) {
    log().info("session {:016x}: memory quota {}, SMs {}", hello.sessionId,
               quota->limited() ? fmt::format("{} bytes", quota->limit()) : std::string("none"),
               executor->multiprocessorGrant() != 0 ? fmt::format("{}", executor->multiprocessorGrant())
                                                     : std::string("all"));
  }
  return std::unique_ptr<SessionHandler>(std::make_unique<CallDispatcher>(std::move(executor), hello.sessionId,
                                                                          std::move(output), std::move(quota)));
}

}  // namespace flyt::backend
