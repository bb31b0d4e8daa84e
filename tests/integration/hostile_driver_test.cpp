// A hostile client of the driver cut (SessionApi::kDriver) against a real flyt-node (GPU stand-in
// workers), over shm and over TCP. This test process is the client: it opens driver sessions by hand
// (hostile_driver.hpp) and sends calls libcuda.so.1 never would: forged, straddling and overflowing
// device ranges, another session's pointers and handles, bulk references outside the payload or
// the data region, unknown method ids, forged handles, truncated and trailing argument bytes,
// address reservations beyond the address space, allocations beyond the session's memory limit.
// For each it checks the worker's answer (the CUresult and transport status), that the hostile
// session still works, and that a well-behaved session on the same node keeps its data and its
// calls succeed. Modules, launches, image uploads and graphs: hostile_driver_modules_test.cpp.
#include <cuda.h>

#include <gtest/gtest.h>

#include <string>
#include <type_traits>
#include <vector>

#include "flyt/api/codec.hpp"
#include "flyt/api/cu_methods.hpp"
#include "flyt/api/cu_specs.hpp"
#include "flyt/transport/data_region.hpp"
#include "flyt/transport/region_protocol.hpp"
#include "hostile_driver.hpp"

namespace {

using namespace std::chrono_literals;
using namespace flyt::test::hostile_driver;
using flyt::test::Answer;
using flyt::test::BulkSpec;
using flyt::test::concat;
using flyt::test::expectRefused;
using flyt::test::pack;

TEST_P(HostileDriver, ForgedPointersStraddlingRangesAndOverflowingLengthsAreRefused) {
  DriverSession& h = *m_hostile;
  const std::uint64_t mine = h.alloc(1024);
  const std::vector<std::byte> bytes(64, std::byte{1});
  expectMalformed(h.memset(kForgedPointer, 0, 64), "cuMemsetD8 of a forged pointer");
  expectMalformed(h.write(kForgedPointer, bytes), "cuMemcpyHtoD to a forged pointer");
  expectMalformed(h.read(kForgedPointer, 64), "cuMemcpyDtoH from a forged pointer");
  expectMalformed(h.copy(kForgedPointer, mine, 64), "cuMemcpyDtoD to a forged pointer");
  expectMalformed(h.copy(mine, kForgedPointer, 64), "cuMemcpyDtoD from a forged pointer");
  expectMalformed(h.memset(mine + 1000, 0, 64), "cuMemsetD8 straddling the end");
  expectMalformed(h.write(mine + 1000, bytes), "cuMemcpyHtoD straddling the end");
  expectMalformed(h.read(mine + 1, 1024), "cuMemcpyDtoH straddling the end");
  expectMalformed(h.copy(mine, mine + 512, 1024), "cuMemcpyDtoD from a straddling source");
  expectMalformed(h.memset(mine + 8, 0, UINT64_MAX - 4), "cuMemsetD8 with an overflowing length");
  expectMalformed(h.read(mine + 8, UINT64_MAX), "cuMemcpyDtoH with an overflowing length");
  expectMalformed(h.copy(mine + 8, mine, UINT64_MAX), "cuMemcpyDtoD with an overflowing length");
  expectMalformed(h.call(Method::cuMemsetD32_v2, pack(mine, 0U, std::uint64_t{257})), "cuMemsetD32 of 1028 bytes");
  expectMalformed(h.call(Method::cuMemsetD32_v2, pack(mine, 0U, UINT64_MAX / 2)),
                  "cuMemsetD32 whose byte count overflows");
  expectMalformed(h.call(Method::cuMemsetD16_v2, pack(mine + 1020, std::uint16_t{0}, std::uint64_t{4})),
                  "cuMemsetD16 straddling the end");
  expectMalformed(h.call(Method::cuMemcpyHtoDAsync_v2, pack(kForgedPointer, std::uint64_t{64}, std::uint64_t{0}),
                         {BulkSpec{flyt::wire::INLINE_SEGMENT, 0, 64}}, bytes),
                  "cuMemcpyHtoDAsync to a forged pointer");
  expectMalformed(h.call(Method::cuMemcpyDtoHAsync_v2, pack(mine + 1000, std::uint64_t{64}, std::uint64_t{0})),
                  "cuMemcpyDtoHAsync straddling the end");
  expectMalformed(h.call(Method::cuMemsetD8Async, pack(mine + 1, std::uint8_t{0}, std::uint64_t{1024}, std::uint64_t{0})),
                  "cuMemsetD8Async straddling the end");
  expectMalformed(h.call(Method::cuMemGetAddressRange_v2, pack(kForgedPointer)), "cuMemGetAddressRange of a forged pointer");
  expectMalformed(h.call(Method::cuStreamWriteValue32_v2, pack(std::uint64_t{0}, mine + 1022, 1U, 0U)),
                  "cuStreamWriteValue32 straddling the end");
  // Inside the allocation but misaligned: the driver's refusal, not the worker's.
  expectDriverSays(h.call(Method::cuMemsetD32_v2, pack(mine + 1, 0U, std::uint64_t{4})), CUDA_ERROR_INVALID_VALUE,
                   "a misaligned cuMemsetD32");
  // Frees: forged, interior, double; then the freed range.
  expectMalformed(h.free(kForgedPointer), "cuMemFree of a pointer never allocated");
  expectMalformed(h.free(mine + 16), "cuMemFree of an interior pointer");
  EXPECT_EQ(h.free(mine).error, kOk);
  expectMalformed(h.free(mine), "a double cuMemFree");
  expectMalformed(h.memset(mine, 0, 16), "cuMemsetD8 of freed memory");
  expectMalformed(h.read(mine, 16), "cuMemcpyDtoH of freed memory");
  bothStillWork("forged and out-of-range pointers");
}

TEST_P(HostileDriver, TheOtherSessionsPointersStreamsEventsAndContextsAreRefused) {
  DriverSession& h = *m_hostile;
  Victim& v = *m_victim;
  ASSERT_TRUE(v.buffer != 0 && v.stream != 0 && v.event != 0 && v.context != 0);
  const std::uint64_t mine = h.alloc(4096);
  expectMalformed(h.memset(v.buffer, 0, 16), "cuMemsetD8 of the victim's allocation");
  expectMalformed(h.write(v.buffer, std::vector<std::byte>(16)), "cuMemcpyHtoD into the victim's allocation");
  expectMalformed(h.read(v.buffer, 16), "cuMemcpyDtoH of the victim's allocation");
  expectMalformed(h.copy(mine, v.buffer, 4096), "cuMemcpyDtoD from the victim's allocation");
  expectMalformed(h.free(v.buffer), "cuMemFree of the victim's allocation");
  expectNotMine(h.call(Method::cuStreamSynchronize, pack(v.stream)), "the victim's stream");
  expectNotMine(h.call(Method::cuStreamDestroy_v2, pack(v.stream)), "destroying the victim's stream");
  expectNotMine(h.call(Method::cuEventRecord, pack(v.event, std::uint64_t{0})), "the victim's event");
  expectNotMine(h.call(Method::cuEventSynchronize, pack(v.event)), "waiting on the victim's event");
  expectNotMine(h.call(Method::cuEventDestroy_v2, pack(v.event)), "destroying the victim's event");
  const std::uint64_t myStream = h.create(Method::cuStreamCreate);
  expectNotMine(h.call(Method::cuStreamWaitEvent, pack(myStream, v.event, 0U)), "my stream, the victim's event");
  expectNotMine(h.call(Method::cuMemsetD8Async, pack(mine, std::uint8_t{0}, std::uint64_t{64}, v.stream)),
                "cuMemsetD8Async on the victim's stream");
  expectMalformed(h.call(Method::cuMemcpyDtoHAsync_v2, pack(v.buffer, std::uint64_t{16}, myStream)),
                  "cuMemcpyDtoHAsync of the victim's allocation");
  expectNotMine(h.setContext(v.context), "making the victim's context current");
  expectNotMine(h.call(Method::cuCtxDestroy_v2, pack(v.context)), "destroying the victim's context");
  bothStillWork("the other session's pointers and handles");
}

TEST_P(HostileDriver, BulkReferencesOutsideThePayloadOrRegionAreRefused) {
  DriverSession& h = *m_hostile;
  const std::uint64_t mine = h.alloc(4096);
  const std::vector<std::byte> bytes(64, std::byte{7});
  auto copyWith = [&](std::vector<BulkSpec> refs, std::uint64_t length = 64) {
    return h.call(Method::cuMemcpyHtoD_v2, pack(mine, length), std::move(refs), bytes);
  };
  expectMalformed(copyWith({{flyt::wire::INLINE_SEGMENT, 8, 64}}), "an inline reference past the payload");
  expectMalformed(copyWith({{flyt::wire::INLINE_SEGMENT, 16, UINT64_MAX - 8}}, 64), "an inline reference whose end overflows");
  expectMalformed(copyWith({{flyt::wire::INLINE_SEGMENT, 0, 32}}), "a reference shorter than the copy");
  expectMalformed(copyWith({{flyt::wire::INLINE_SEGMENT, 0, 32}, {flyt::wire::INLINE_SEGMENT, 32, 32}}), "two references");
  expectMalformed(copyWith({}), "no reference");
  expectMalformed(copyWith({{7, 0, 64}}), "a segment never announced");
  expectMalformed(h.call(Method::cuMemcpyDtoH_v2, pack(mine, std::uint64_t{64}), {{flyt::wire::INLINE_SEGMENT, 0, 64}}, bytes),
                  "a device-to-host copy into the request's own inline bytes");
  // Methods that read their bulk bytes from the message only: a data-region reference is refused
  // whatever it names (over TCP there is no region at all).
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  expectMalformed(h.call(Method::cuMemCreate, pack(std::uint64_t{2 << 20}, std::uint64_t{0}),
                         {{ft::kRingSegmentId, ft::kSegmentDataOffset, sizeof prop}}),
                  "cuMemCreate's properties in the data region");
  expectMalformed(h.call(Method::flytUploadImage, pack(std::uint64_t{1}, std::uint64_t{64}, std::uint64_t{0}),
                         {{ft::kRingSegmentId, ft::kSegmentDataOffset, 64}}),
                  "an image chunk in the data region");
  if (GetParam() == "shm") {
    // A real data region with its ring segment announced: references beyond it are refused, one
    // inside it is served in both directions.
    auto region = ft::DataRegion::create(h.id(), flyt::test::smallRegionConfig(),
                                         {.onCreated = [&](const ft::SegmentView& view) {
                                           return ft::announceSegment(h.channel(), view, 2s);
                                         }});
    ASSERT_TRUE(region) << region.error().describe();
    const std::uint64_t size = (*region)->segments().at(0).sizeBytes;
    expectMalformed(copyWith({{ft::kRingSegmentId, 0, 64}}), "the segment's header");
    expectMalformed(copyWith({{ft::kRingSegmentId, size, 64}}), "an offset past the segment");
    expectMalformed(copyWith({{ft::kRingSegmentId, size - 32, 64}}), "a range straddling the segment's end");
    expectMalformed(copyWith({{ft::kRingSegmentId, UINT64_MAX - 16, 64}}), "offset + length overflowing");
    expectMalformed(copyWith({{ft::kRingSegmentId + 1, 0, 64}}), "the next, unannounced segment");
    const std::uint64_t first = ft::kSegmentDataOffset;
    EXPECT_EQ(copyWith({{ft::kRingSegmentId, first, 64}}).error, kOk) << "a reference inside the ring";
    EXPECT_EQ(h.call(Method::cuMemcpyDtoH_v2, pack(mine, std::uint64_t{64}), {{ft::kRingSegmentId, first, 64}}).error, kOk)
        << "a device-to-host copy into the ring";
    expectMalformed(h.call(Method::cuMemcpyDtoH_v2, pack(mine, std::uint64_t{64}), {{ft::kRingSegmentId, size - 8, 64}}),
                    "a device-to-host copy past the ring's end");
    // The device address of region memory (cuMemHostGetDevicePointer) is given for the session's
    // pinned host-memory segments only; memory named by it is then the session's to copy to.
    auto regionDevice = [&](std::uint32_t segment) { return h.call(Method::flytRegionDevicePointer, pack(segment)); };
    expectDriverSays(regionDevice(ft::kRingSegmentId), CUDA_ERROR_INVALID_VALUE, "the staging ring's device address");
    expectDriverSays(regionDevice(ft::kRingSegmentId + 1000), CUDA_ERROR_INVALID_VALUE, "an unannounced segment's device address");
    auto pinned = (*region)->hostAllocator().allocate(4096);
    ASSERT_TRUE(pinned) << pinned.error().describe();
    const auto ref = (*region)->hostAllocator().tryLookup(*pinned, 4096);
    ASSERT_TRUE(ref);
    expectRefused(h.memset(reinterpret_cast<std::uintptr_t>(*pinned), 0x3c, 64), CUDA_ERROR_INVALID_VALUE, TransportStatus::MALFORMED,
                  "pinned memory named as device memory before its device address was asked for");
    auto answer = regionDevice(ref->segment);
    ASSERT_EQ(answer.error, kOk) << answer;
    flyt::api::ArgReader reader(answer.results);
    std::uint64_t device = 0, mappedBytes = 0;
    ASSERT_TRUE(reader.get(device) && reader.get(mappedBytes) && reader.exhausted());
    EXPECT_GE(mappedBytes, ref->offset + 4096);
    EXPECT_EQ(h.memset(device + ref->offset, 0x3c, 64).error, kOk);
    EXPECT_EQ(static_cast<const unsigned char*>(*pinned)[63], 0x3c) << "the memset reached the application's memory";
    expectMalformed(h.memset(device + mappedBytes - 32, 0x3c, 64), "a memset straddling the mapped segment's end");
    expectMalformed(h.call(Method::flytRegionDevicePointer, pack(std::uint16_t{1})), "flytRegionDevicePointer with bad arguments");
  }
  bothStillWork("bad bulk references");
}

TEST_P(HostileDriver, UnknownAndUnservedMethodIdsAreUnsupportedAndTheSessionGoesOn) {
  DriverSession& h = *m_hostile;
  for (std::uint32_t id : {0U, flyt::api::cu::kMethodIdLimit, flyt::api::cu::kMethodIdLimit + 1000, 0xffffffffU}) {
    expectRefused(h.call(id, pack(std::uint64_t{1}, std::uint64_t{2})), CUDA_ERROR_NOT_SUPPORTED,
                  TransportStatus::UNSUPPORTED, "an unknown method id");
  }
  // Answered in the application's process by libcuda.so.1, never by the worker.
  expectRefused(h.call(Method::cuCtxSetCurrent, pack(h.context())), CUDA_ERROR_NOT_SUPPORTED, TransportStatus::UNSUPPORTED,
                "a local method");
  expectRefused(h.call(Method::cuInit, pack(0U)), CUDA_ERROR_NOT_SUPPORTED, TransportStatus::UNSUPPORTED, "cuInit");
  bothStillWork("unknown method ids");
}

TEST_P(HostileDriver, ForgedHandlesDevicesAndContextsAreRefused) {
  DriverSession& h = *m_hostile;
  const std::uint64_t stream = h.create(Method::cuStreamCreate);
  const std::uint64_t event = h.create(Method::cuEventCreate);
  expectNotMine(h.call(Method::cuStreamSynchronize, pack(kForgedHandle)), "a stream never created");
  expectNotMine(h.call(Method::cuStreamDestroy_v2, pack(kForgedHandle)), "destroying a stream never created");
  expectNotMine(h.call(Method::cuEventRecord, pack(kForgedHandle, stream)), "an event never created");
  expectNotMine(h.call(Method::cuEventDestroy_v2, pack(kForgedHandle)), "destroying an event never created");
  expectNotMine(h.call(Method::cuEventRecord, pack(stream, stream)), "a stream passed as an event");
  expectNotMine(h.call(Method::cuStreamSynchronize, pack(event)), "an event passed as a stream");
  expectNotMine(h.setContext(kForgedHandle), "making a context never created current");
  expectNotMine(h.setContext(stream), "a stream made current as a context");
  expectNotMine(h.call(Method::cuCtxDestroy_v2, pack(kForgedHandle)), "destroying a context never created");
  expectMalformed(h.call(Method::cuCtxDestroy_v2, pack(h.context())), "destroying the primary context");
  expectMalformed(h.call(Method::cuCtxDestroy_v2, pack(std::uint64_t{0})), "destroying the null context");
  expectNotMine(h.call(Method::cuModuleUnload, pack(kForgedHandle)), "unloading a module never loaded");
  expectNotMine(h.call(Method::cuModuleGetFunction, withName(pack(kForgedHandle), "hostile_scale")),
                "a function of a module never loaded");
  expectNotMine(h.call(Method::cuKernelGetFunction, pack(kForgedHandle)), "a kernel never looked up");
  expectNotMine(h.call(Method::cuMemRelease, pack(kForgedHandle)), "releasing a physical allocation never made");
  for (std::int32_t device : {1, 7, -1}) {
    expectDriverSays(h.call(Method::cuDevicePrimaryCtxRetain, pack(device)), CUDA_ERROR_INVALID_DEVICE,
                     "a device the session does not have");
  }
  expectDriverSays(h.call(Method::cuCtxCreate_v4, pack(0U, std::int32_t{3})), CUDA_ERROR_INVALID_DEVICE,
                   "a context on a device the session does not have");
  // Destroyed handles are gone for good.
  EXPECT_EQ(h.call(Method::cuEventDestroy_v2, pack(event)).error, kOk);
  expectNotMine(h.call(Method::cuEventRecord, pack(event, stream)), "a destroyed event");
  EXPECT_EQ(h.call(Method::cuStreamDestroy_v2, pack(stream)).error, kOk);
  expectNotMine(h.call(Method::cuStreamSynchronize, pack(stream)), "a destroyed stream");
  bothStillWork("forged handles");
}

TEST_P(HostileDriver, ADestroyedOrResetContextsAllocationsAreRefused) {
  DriverSession& h = *m_hostile;
  auto made = h.call(Method::cuCtxCreate_v4, pack(0U, std::int32_t{0}));
  ASSERT_EQ(made.error, kOk) << made;
  const auto context = made.result<std::uint64_t>();
  ASSERT_EQ(h.setContext(context).error, kOk);
  const std::uint64_t inCreated = h.alloc(4096);
  ASSERT_EQ(h.setContext(h.context()).error, kOk);
  const std::uint64_t inPrimary = h.alloc(4096);
  EXPECT_EQ(h.memset(inCreated, 1, 4096).error, kOk);
  EXPECT_EQ(h.call(Method::cuCtxDestroy_v2, pack(context)).error, kOk);
  expectMalformed(h.memset(inCreated, 1, 4096), "a memset of an allocation its destroyed context freed");
  expectMalformed(h.free(inCreated), "freeing an allocation its destroyed context freed");
  expectNotMine(h.setContext(context), "the destroyed context");
  EXPECT_EQ(h.memset(inPrimary, 1, 4096).error, kOk) << "the primary context's allocation";
  EXPECT_EQ(h.call(Method::cuDevicePrimaryCtxReset_v2, pack(std::int32_t{0})).error, kOk);
  expectMalformed(h.memset(inPrimary, 1, 4096), "a memset of an allocation the primary context's reset freed");
  expectMalformed(h.read(inPrimary, 16), "a read of an allocation the primary context's reset freed");
  // The primary's last retain: its allocations go with it unless the worker still holds it.
  const std::uint64_t beforeRelease = h.alloc(4096);
  EXPECT_EQ(h.call(Method::cuDevicePrimaryCtxRelease_v2, pack(std::int32_t{0})).error, kOk);
  auto state = h.call(Method::cuDevicePrimaryCtxGetState, pack(std::int32_t{0}));
  ASSERT_EQ(state.error, kOk) << state;
  if (state.result<std::int32_t>(4) == 0) {
    expectMalformed(h.memset(beforeRelease, 1, 4096), "a memset of an allocation the primary context's release freed");
  } else {
    EXPECT_EQ(h.memset(beforeRelease, 1, 4096).error, kOk) << "the primary context still held by the worker";
  }
  auto again = h.call(Method::cuDevicePrimaryCtxRetain, pack(std::int32_t{0}));
  ASSERT_EQ(again.error, kOk) << again;
  ASSERT_EQ(again.result<std::uint64_t>(), h.context());
  bothStillWork("destroyed and reset contexts");
}

// ---- argument bytes ----------------------------------------------------------------------------

// What an argument of each codec tag contributes to Call.args (flyt/api/codec.hpp).
template <class Tag> constexpr std::size_t kWireBytes = 0;  // Out<T>: nothing
template <class T> constexpr std::size_t kWireBytes<flyt::api::Val<T>> = sizeof(T);
template <class T> constexpr std::size_t kWireBytes<flyt::api::In<T>> = sizeof(T);
template <class T> constexpr std::size_t kWireBytes<flyt::api::InOut<T>> = sizeof(T);
template <class... Tags> constexpr bool hasString(flyt::api::ArgList<Tags...>*) {
  return (std::is_same_v<Tags, flyt::api::CStr> || ...);
}
template <class... Tags> constexpr std::size_t argBytes(flyt::api::ArgList<Tags...>*) {
  return (std::size_t{0} + ... + kWireBytes<Tags>);
}

struct GeneratedHandler {
  std::string_view name;
  std::uint32_t id;
  std::size_t argBytes;
};

template <Method M> void addGenerated(std::vector<GeneratedHandler>& out) {
  using flyt::api::cu::Handler;
  if constexpr (requires { typename flyt::api::cu::Spec<M>::Args; }) {
    using Args = typename flyt::api::cu::Spec<M>::Args;
    const auto& info = flyt::api::cu::methodInfo(M);
    if (!hasString(static_cast<Args*>(nullptr)) && info.kind != flyt::api::cu::Kind::Local &&
        (info.handler == Handler::Generated || info.handler == Handler::Client)) {
      out.push_back({info.name, static_cast<std::uint32_t>(M), argBytes(static_cast<Args*>(nullptr))});
    }
  }
}

// Every function whose worker handler is generated from api/cuda.toml, with its argument bytes.
std::vector<GeneratedHandler> generatedHandlers() {
  std::vector<GeneratedHandler> out;
#define FLYT_ADD(name, ...) addGenerated<Method::name>(out);
  FLYT_CU_IMPLEMENTED_METHODS(FLYT_ADD)
#undef FLYT_ADD
  return out;
}

TEST_P(HostileDriver, TruncatedArgumentsAndTrailingBytesAreMalformed) {
  DriverSession& h = *m_hostile;
  const auto handlers = generatedHandlers();
  ASSERT_GT(handlers.size(), 100U);
  for (const auto& handler : handlers) {
    const std::string name(handler.name);
    if (handler.argBytes > 0) {
      expectMalformed(h.call(handler.id, std::vector<std::byte>(handler.argBytes - 1, std::byte{0x11})),
                      (name + " with one byte too few").c_str());
    }
    expectMalformed(h.call(handler.id, std::vector<std::byte>(handler.argBytes + 1, std::byte{0x11})),
                    (name + " with a trailing byte").c_str());
  }
  // Hand-written handlers.
  const std::vector<std::pair<Method, std::vector<std::byte>>> short_ = {
      {Method::flytSetContext, pack(0U)},
      {Method::flytGetDevices, pack(std::uint8_t{0})},
      {Method::cuDevicePrimaryCtxRetain, pack(std::uint16_t{0})},
      {Method::cuCtxCreate_v4, pack(0U)},
      {Method::cuCtxDestroy_v2, pack(0U)},
      {Method::cuMemcpyHtoD_v2, pack(std::uint64_t{0})},
      {Method::cuMemcpyDtoH_v2, pack(std::uint64_t{0}, std::uint64_t{0}, std::uint8_t{0})},
      {Method::cuMemcpyDtoHAsync_v2, pack(std::uint64_t{0}, std::uint64_t{0})},
      {Method::cuMemcpy2D_v2, pack(std::uint8_t{1}, std::uint64_t{0})},
      {Method::cuMemGetInfo_v2, pack(std::uint8_t{0})},
      {Method::cuMemAllocPitch_v2, pack(std::uint64_t{64}, std::uint64_t{4})},
      {Method::flytUploadImage, pack(std::uint64_t{1}, std::uint64_t{64})},
      {Method::cuModuleLoadData, pack(std::uint64_t{1})},
      {Method::cuModuleGetFunction, concat(pack(std::uint64_t{0x10000}, 1000U), std::vector<std::byte>(3))},
      {Method::cuModuleGetGlobal_v2, pack(std::uint64_t{0x10000})},
      {Method::cuMemAddressReserve, pack(std::uint64_t{2 << 20}, std::uint64_t{0}, std::uint64_t{0})},
      {Method::cuMemMap, pack(std::uint64_t{0}, std::uint64_t{0}, std::uint64_t{0}, std::uint64_t{0})},
      {Method::cuMemCreate, pack(std::uint64_t{2 << 20})},
      {Method::cuGraphAddEmptyNode, pack(std::uint64_t{0})},
      {Method::cuStreamGetCaptureInfo_v3, pack(0U)},
  };
  for (const auto& [method, args] : short_) {
    expectMalformed(h.call(method, args), (std::string(flyt::api::cu::methodInfo(method).name) + " with bad arguments").c_str());
  }
  bothStillWork("truncated and trailing argument bytes");
}

TEST_P(HostileDriver, AddressReservationsBeyondTheAddressSpaceAreRefused) {
  DriverSession& h = *m_hostile;
  constexpr std::uint64_t kGranule = 2 << 20;
  auto reserve = [&](std::uint64_t size, std::uint64_t alignment, std::uint64_t hint = 0) {
    return h.call(Method::cuMemAddressReserve, pack(size, alignment, hint, std::uint64_t{0}));
  };
  // Sizes whose sum with the alignment wraps: the stand-in must not trim mappings that are not its own.
  expectDriverSays(reserve(UINT64_MAX - kGranule + 1, 0), CUDA_ERROR_OUT_OF_MEMORY, "a reservation of 2^64 - 2 MiB");
  expectDriverSays(reserve(UINT64_MAX - kGranule + 1, 2 * kGranule), CUDA_ERROR_OUT_OF_MEMORY,
                   "a reservation of 2^64 - 2 MiB, 4 MiB aligned");
  expectDriverSays(reserve(UINT64_MAX - 2 * kGranule + 1, 4 * kGranule), CUDA_ERROR_OUT_OF_MEMORY,
                   "a reservation of 2^64 - 4 MiB, 8 MiB aligned");
  expectDriverSays(reserve(kGranule, 1ULL << 63), CUDA_ERROR_OUT_OF_MEMORY, "an alignment of 2^63");
  expectDriverSays(reserve(kGranule + 1, 0), CUDA_ERROR_INVALID_VALUE, "a size off the granularity");
  // A mapping outside any reservation of the session, and one that does not fit its allocation.
  auto reserved = reserve(2 * kGranule, 0);
  ASSERT_EQ(reserved.error, kOk) << reserved;
  const auto base = reserved.result<std::uint64_t>();
  auto created = memCreate(h, kGranule);
  ASSERT_EQ(created.error, kOk) << created;
  const auto handle = created.result<std::uint64_t>();
  auto map = [&](std::uint64_t at, std::uint64_t size, std::uint64_t offset) {
    return h.call(Method::cuMemMap, pack(at, size, offset, handle, std::uint64_t{0}));
  };
  expectMalformed(map(kForgedPointer, kGranule, 0), "a mapping outside the session's reservations");
  expectMalformed(map(base + kGranule, 2 * kGranule, 0), "a mapping past the reservation's end");
  expectMalformed(map(base, kGranule, kGranule), "a mapping past the physical allocation's end");
  expectMalformed(map(base, kGranule, UINT64_MAX - 4), "a mapping whose offset overflows");
  EXPECT_EQ(map(base, kGranule, 0).error, kOk);
  EXPECT_EQ(h.memset(base, 7, kGranule).error, kOk) << "the mapping is device memory of the session";
  expectMalformed(h.memset(base, 7, kGranule + 1), "a memset past the mapping");
  expectRefused(h.call(Method::cuMemRelease, pack(handle)), CUDA_ERROR_INVALID_VALUE, TransportStatus::OK,
                "releasing a mapped allocation");
  expectMalformed(h.call(Method::cuMemUnmap, pack(base, kGranule / 2)), "unmapping half a mapping");
  EXPECT_EQ(h.call(Method::cuMemUnmap, pack(base, kGranule)).error, kOk);
  expectMalformed(h.memset(base, 7, 16), "a memset of an unmapped range");
  EXPECT_EQ(h.call(Method::cuMemRelease, pack(handle)).error, kOk);
  EXPECT_EQ(h.call(Method::cuMemAddressFree, pack(base, 2 * kGranule)).error, kOk);
  expectMalformed(h.call(Method::cuMemAddressFree, pack(base, 2 * kGranule)), "a second cuMemAddressFree");
  bothStillWork("address reservations");
}

std::string transportName(const ::testing::TestParamInfo<std::string>& param) { return param.param; }
INSTANTIATE_TEST_SUITE_P(Transports, HostileDriver, ::testing::Values("shm", "tcp"), transportName);

// ---- the memory quota --------------------------------------------------------------------------

constexpr std::uint64_t kMiB = 1 << 20;

// A node whose sessions may each allocate 8 MiB of device memory.
class HostileDriverQuota : public HostileDriver {
 protected:
  std::vector<std::string> nodeOptions() const override { return {"--session-memory-limit", "8MiB"}; }
};

TEST_P(HostileDriverQuota, NoAllocationPathExceedsTheSessionsMemoryLimit) {
  DriverSession& h = *m_hostile;
  auto info = h.call(Method::cuMemGetInfo_v2, {});
  ASSERT_EQ(info.error, kOk) << info;
  EXPECT_EQ(info.result<std::uint64_t>(8), 8 * kMiB) << "cuMemGetInfo's total is the limit";
  const std::uint64_t six = h.alloc(6 * kMiB);
  ASSERT_NE(six, 0U);
  expectDriverSays(h.call(Method::cuMemAlloc_v2, pack(4 * kMiB)), CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc beyond the limit");
  expectDriverSays(h.call(Method::cuMemAlloc_v2, pack(UINT64_MAX)), CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc of 2^64-1 bytes");
  expectDriverSays(h.call(Method::cuMemAllocPitch_v2, pack(std::uint64_t{1} << 40, std::uint64_t{1} << 40, 4U)),
                   CUDA_ERROR_OUT_OF_MEMORY, "cuMemAllocPitch whose size overflows");
  expectDriverSays(h.call(Method::cuMemAllocPitch_v2, pack(std::uint64_t{4096}, std::uint64_t{1024}, 4U)),
                   CUDA_ERROR_OUT_OF_MEMORY, "cuMemAllocPitch beyond the limit");
  expectDriverSays(memCreate(h, 4 * kMiB), CUDA_ERROR_OUT_OF_MEMORY, "cuMemCreate beyond the limit");
  // Stream-ordered allocation is charged as well; a refused one charges nothing.
  for (int i = 0; i < 3; ++i) {
    expectDriverSays(h.call(Method::cuMemAllocAsync, pack(4 * kMiB, std::uint64_t{0})), CUDA_ERROR_OUT_OF_MEMORY,
                     "cuMemAllocAsync beyond the limit");
  }
  // The remaining 2 MiB, once as physical memory, once as an allocation.
  auto physical = memCreate(h, 2 * kMiB);
  ASSERT_EQ(physical.error, kOk) << physical;
  expectDriverSays(h.call(Method::cuMemAlloc_v2, pack(kMiB)), CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc with the limit reached");
  EXPECT_EQ(h.call(Method::cuMemRelease, pack(physical.result<std::uint64_t>())).error, kOk);
  expectDriverSays(memCreate(h, kMiB), CUDA_ERROR_INVALID_VALUE, "cuMemCreate off the granularity");
  const std::uint64_t two = h.alloc(2 * kMiB);
  EXPECT_NE(two, 0U) << "a refused or released allocation gives its bytes back";
  // The victim has a limit of its own.
  const std::uint64_t victims = m_victim->session.alloc(6 * kMiB);
  EXPECT_NE(victims, 0U);
  EXPECT_EQ(m_victim->session.free(victims).error, kOk);
  // A context's allocations give their bytes back when it goes.
  EXPECT_EQ(h.free(six).error, kOk);
  EXPECT_EQ(h.free(two).error, kOk);
  auto made = h.call(Method::cuCtxCreate_v4, pack(0U, std::int32_t{0}));
  ASSERT_EQ(made.error, kOk) << made;
  ASSERT_EQ(h.setContext(made.result<std::uint64_t>()).error, kOk);
  EXPECT_NE(h.alloc(6 * kMiB), 0U);
  ASSERT_EQ(h.setContext(h.context()).error, kOk);
  EXPECT_EQ(h.call(Method::cuCtxDestroy_v2, pack(made.result<std::uint64_t>())).error, kOk);
  EXPECT_NE(h.alloc(6 * kMiB), 0U) << "after the destroyed context's 6 MiB";
  EXPECT_EQ(h.call(Method::cuDevicePrimaryCtxReset_v2, pack(std::int32_t{0})).error, kOk);
  EXPECT_NE(h.alloc(6 * kMiB), 0U) << "after the reset primary context's 6 MiB";
  EXPECT_EQ(h.call(Method::cuDevicePrimaryCtxReset_v2, pack(std::int32_t{0})).error, kOk);
  bothStillWork("the memory limit");
}

INSTANTIATE_TEST_SUITE_P(Transports, HostileDriverQuota, ::testing::Values("shm", "tcp"), transportName);

}  // namespace
