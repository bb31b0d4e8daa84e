// A hostile client of the driver cut (SessionApi::kDriver) against a real flyt-node (GPU stand-in
// workers), over shm and over TCP. This test process is the client: it opens driver sessions by hand
// (raw_session.hpp), sets them up as Flyt's libcuda.so.1 does (device discovery, device 0's primary
// context retained and made current: interpose/driver/driver_client.cpp and contexts.cpp), and then
// sends calls libcuda.so.1 never would (method ids from flyt/api/cu_methods.hpp, arguments packed as
// cu_specs.hpp and the hand-written handlers' wire comments say). For each attack it checks the
// worker's answer (the CUresult and transport status), that the hostile session still works, and
// that a well-behaved session on the same node keeps its data and its calls succeed.
#include <cuda.h>

#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "flyt/api/codec.hpp"
#include "flyt/api/cu_methods.hpp"
#include "flyt/api/fatbin.hpp"
#include "flyt/transport/data_region.hpp"
#include "flyt/transport/region_protocol.hpp"
#include "process_helpers.hpp"
#include "raw_session.hpp"

namespace {

using namespace std::chrono_literals;
using flyt::api::cu::Method;
using flyt::test::Answer;
using flyt::test::BulkSpec;
using flyt::test::concat;
using flyt::test::expectRefused;
using flyt::test::pack;
using flyt::wire::TransportStatus;
namespace ft = flyt::transport;

constexpr std::int32_t kOk = CUDA_SUCCESS;
constexpr std::uint64_t kForgedPointer = 0x7f0000001000ULL;
constexpr std::uint64_t kForgedHandle = 0x7777770ULL;  // shaped like the worker's ids, never one

void expectMalformed(const Answer& a, const char* what) {
  expectRefused(a, CUDA_ERROR_INVALID_VALUE, TransportStatus::MALFORMED, what);
}
// A handle that is not the session's, or not of the kind the argument takes.
void expectNotMine(const Answer& a, const char* what) {
  expectRefused(a, CUDA_ERROR_INVALID_HANDLE, TransportStatus::MALFORMED, what);
}
// Refused by the driver itself (the worker's checks let it through).
void expectDriverSays(const Answer& a, CUresult error, const char* what) {
  expectRefused(a, error, TransportStatus::OK, what);
}

std::vector<std::byte> withName(std::vector<std::byte> args, std::string_view name) {
  flyt::api::ArgWriter(args).putString(name);
  return args;
}

// A driver session spoken by hand, set up as libcuda.so.1 sets one up.
class DriverSession : public flyt::test::RawSession {
 public:
  DriverSession(const std::string& endpoint, const ft::TransportConfig& config, const char* name)
      : RawSession(endpoint, config, name, ft::SessionApi::kDriver) {
    if (!open()) return;
    EXPECT_EQ(call(Method::flytGetDevices, {}).error, kOk);
    auto primary = call(Method::cuDevicePrimaryCtxRetain, pack(std::int32_t{0}));
    EXPECT_EQ(primary.error, kOk) << primary;
    m_context = primary.result<std::uint64_t>();
    EXPECT_EQ(setContext(m_context).error, kOk);
  }
  [[nodiscard]] std::uint64_t context() const { return m_context; }

  // ---- well-formed calls ----
  Answer setContext(std::uint64_t context) { return call(Method::flytSetContext, pack(context)); }
  std::uint64_t alloc(std::uint64_t bytes) {
    auto a = call(Method::cuMemAlloc_v2, pack(bytes));
    EXPECT_EQ(a.error, kOk) << a;
    return a.result<std::uint64_t>();
  }
  Answer free(std::uint64_t device) { return call(Method::cuMemFree_v2, pack(device)); }
  Answer memset(std::uint64_t device, std::uint8_t value, std::uint64_t bytes) {
    return call(Method::cuMemsetD8_v2, pack(device, value, bytes));
  }
  Answer write(std::uint64_t device, std::span<const std::byte> bytes) {
    return call(Method::cuMemcpyHtoD_v2, pack(device, std::uint64_t{bytes.size()}),
                {BulkSpec{flyt::wire::INLINE_SEGMENT, 0, bytes.size()}}, bytes);
  }
  Answer read(std::uint64_t device, std::uint64_t bytes) { return call(Method::cuMemcpyDtoH_v2, pack(device, bytes)); }
  Answer copy(std::uint64_t to, std::uint64_t from, std::uint64_t bytes) {
    return call(Method::cuMemcpyDtoD_v2, pack(to, from, bytes));
  }
  // cuStreamCreate or cuEventCreate (flags 0): the new handle's id.
  std::uint64_t create(Method method) {
    auto a = call(method, pack(0U));
    EXPECT_EQ(a.error, kOk) << a;
    return a.result<std::uint64_t>();
  }

  // The session still serves: its context, an allocation set, copied and read back, a stream.
  void expectWorks(const char* after) {
    SCOPED_TRACE(after);
    ASSERT_EQ(setContext(m_context).error, kOk);
    const std::uint64_t a = alloc(256), b = alloc(256);
    ASSERT_TRUE(a != 0 && b != 0);
    EXPECT_EQ(memset(a, 0x5a, 256).error, kOk);
    EXPECT_EQ(copy(b, a, 256).error, kOk);
    auto back = read(b, 256);
    ASSERT_EQ(back.error, kOk) << back;
    ASSERT_EQ(back.payload, std::vector<std::byte>(256, std::byte{0x5a}));
    EXPECT_EQ(free(a).error, kOk);
    EXPECT_EQ(free(b).error, kOk);
    const std::uint64_t stream = create(Method::cuStreamCreate);
    EXPECT_EQ(call(Method::cuStreamSynchronize, pack(stream)).error, kOk);
    EXPECT_EQ(call(Method::cuStreamDestroy_v2, pack(stream)).error, kOk);
  }

 private:
  std::uint64_t m_context = 0;
};

// The well-behaved session beside the hostile one: a buffer with a known pattern, a stream, an
// event and a context of its own; check() asserts they are intact and usable.
struct Victim {
  DriverSession session;
  std::uint64_t buffer = 0, stream = 0, event = 0, context = 0;
  std::vector<std::byte> pattern = std::vector<std::byte>(4096);

  Victim(const std::string& endpoint, const ft::TransportConfig& config) : session(endpoint, config, "victim") {
    for (std::size_t i = 0; i < pattern.size(); ++i) pattern[i] = std::byte(i * 7 + 3);
    if (!session.open()) return;
    // Every session numbers its handles from the same first id (serve_context.hpp): the victim's
    // are made ids the hostile session never reaches, so that naming them means naming another
    // session's objects, not its own.
    for (int i = 0; i < 64; ++i) (void)session.call(Method::cuEventDestroy_v2, pack(session.create(Method::cuEventCreate)));
    buffer = session.alloc(pattern.size());
    EXPECT_EQ(session.write(buffer, pattern).error, kOk);
    stream = session.create(Method::cuStreamCreate);
    event = session.create(Method::cuEventCreate);
    auto made = session.call(Method::cuCtxCreate_v4, pack(0U, std::int32_t{0}));
    EXPECT_EQ(made.error, kOk) << made;
    context = made.result<std::uint64_t>();
    EXPECT_EQ(session.setContext(session.context()).error, kOk);
  }
  void check(const char* after) {
    SCOPED_TRACE(std::string("victim after ") + after);
    auto back = session.read(buffer, pattern.size());
    ASSERT_EQ(back.error, kOk) << back;
    EXPECT_EQ(back.payload, pattern);
    EXPECT_EQ(session.call(Method::cuEventRecord, pack(event, stream)).error, kOk);
    EXPECT_EQ(session.call(Method::cuStreamSynchronize, pack(stream)).error, kOk);
    EXPECT_EQ(session.call(Method::cuEventSynchronize, pack(event)).error, kOk);
    EXPECT_EQ(session.setContext(context).error, kOk);
    session.expectWorks(after);
  }
};

// The worker pid of a session, from the node's log; 0 when it is not there.
pid_t workerOf(const std::string& log, const std::string& sessionHex) {
  std::smatch match;
  if (!std::regex_search(log, match, std::regex("session " + sessionHex + " started: .* worker pid (\\d+)"))) return 0;
  return static_cast<pid_t>(std::stoi(match[1]));
}

// VmRSS of a process in bytes; 0 when it cannot be read.
std::uint64_t residentBytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("VmRSS:")) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

class HostileDriver : public ::testing::TestWithParam<std::string> {
 protected:
  // More flyt-node options (a quota).
  virtual std::vector<std::string> nodeOptions() const { return {}; }
  void SetUp() override {
    flyt::test::holdHostRouDiLock();
    m_node = std::make_unique<flyt::test::StandinNode>(FLYT_NODE_PATH, "flyt-hostile-driver",
                                                       std::vector<std::string>{}, nodeOptions());
    ASSERT_TRUE(m_node->ready()) << m_node->log();
    m_victim = std::make_unique<Victim>(endpoint(), flyt::test::smallRegionConfig());
    m_hostile = std::make_unique<DriverSession>(endpoint(), flyt::test::smallRegionConfig(), "hostile");
    ASSERT_TRUE(m_victim->session.open() && m_hostile->open()) << m_node->log();
  }
  void TearDown() override {
    if (m_node) {
      EXPECT_EQ(m_node->log().find("killed by signal"), std::string::npos) << m_node->log();
    }
  }
  [[nodiscard]] const std::string& endpoint() const { return m_node->endpoint(GetParam()); }
  void bothStillWork(const char* after) {
    m_hostile->expectWorks(after);
    m_victim->check(after);
  }

  std::unique_ptr<flyt::test::StandinNode> m_node;
  std::unique_ptr<Victim> m_victim;
  std::unique_ptr<DriverSession> m_hostile;
};

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

std::string transportName(const ::testing::TestParamInfo<std::string>& param) { return param.param; }
INSTANTIATE_TEST_SUITE_P(Transports, HostileDriver, ::testing::Values("shm", "tcp"), transportName);

}  // namespace
