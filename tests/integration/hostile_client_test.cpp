// A hostile client against a real flyt-node (GPU stand-in workers), over shm and over TCP. This test
// process is the client: it opens sessions by hand (raw_session.hpp) and sends Envelopes built by
// hand (method ids from flyt/api/methods.hpp, arguments packed with api::ArgWriter as specs.hpp
// says), so it can send what libcudart never would. For each attack it checks the answer (the CUDA
// error and transport status the dispatcher documents), that the same session still works (a
// cudaMalloc/cudaMemset/cudaMemcpy round trip), and that a second, well-behaved session on the same
// node keeps its data and its calls succeed. Oversized frames end the session by design; there the
// worker must exit by itself with the status for a broken session, the node must log why, and the
// node must still serve new sessions.
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <regex>
#include <string>
#include <vector>

#include "flyt/api/codec.hpp"
#include "flyt/api/fatbin.hpp"
#include "flyt/api/methods.hpp"
#include "flyt/transport/config.hpp"
#include "flyt/transport/data_region.hpp"
#include "flyt/transport/handshake.hpp"
#include "flyt/transport/region_protocol.hpp"
#include "flyt/wire/session.capnp.h"
#include "hostile_fixture.hpp"
#include "process_helpers.hpp"
#include "raw_session.hpp"

namespace {

using namespace std::chrono_literals;
using flyt::api::Method;
using flyt::test::eventually;
using flyt::test::Process;
using flyt::wire::TransportStatus;
namespace ft = flyt::transport;

struct Node : flyt::test::StandinNode {
  explicit Node(std::vector<std::string> env = {}) : StandinNode(FLYT_NODE_PATH, "flyt-hostile", std::move(env)) {}
};

using flyt::test::Answer;
using flyt::test::BulkSpec;
using flyt::test::concat;
using flyt::test::expectRefused;
using flyt::test::pack;
using flyt::test::readFile;

constexpr std::int32_t kOk = cudaSuccess;
constexpr std::int32_t kInvalidValue = cudaErrorInvalidValue;

// A runtime session spoken by hand (raw_session.hpp), with the well-formed calls the checks use.
class RuntimeSession : public flyt::test::RawSession {
 public:
  RuntimeSession(const std::string& endpoint, const ft::TransportConfig& config, const char* name)
      : RawSession(endpoint, config, name) {}

  // ---- well-formed calls ----
  std::uint64_t malloc(std::uint64_t bytes) {
    auto a = call(Method::cudaMalloc, pack(bytes));
    EXPECT_EQ(a.error, kOk) << a;
    return a.result<std::uint64_t>();
  }
  Answer memset(std::uint64_t device, int value, std::uint64_t bytes) {
    return call(Method::cudaMemset, pack(device, value, bytes));
  }
  Answer write(std::uint64_t device, std::span<const std::byte> bytes) {
    return call(Method::cudaMemcpy, pack(device, std::uint64_t{bytes.size()}, std::int32_t{cudaMemcpyHostToDevice}),
                {BulkSpec{flyt::wire::INLINE_SEGMENT, 0, bytes.size()}}, bytes);
  }
  Answer read(std::uint64_t device, std::uint64_t bytes) {
    return call(Method::cudaMemcpy, pack(device, bytes, std::int32_t{cudaMemcpyDeviceToHost}));
  }
  std::uint64_t handle(Method create) {
    auto a = call(create, {});
    EXPECT_EQ(a.error, kOk) << a;
    return a.result<std::uint64_t>();
  }

  // The session still serves: allocate, set, read back, free.
  void expectWorks(const char* after) {
    SCOPED_TRACE(after);
    const std::uint64_t buffer = malloc(256);
    ASSERT_NE(buffer, 0U);
    EXPECT_EQ(memset(buffer, 0x5a, 256).error, kOk);
    auto back = read(buffer, 256);
    ASSERT_EQ(back.error, kOk) << back;
    ASSERT_EQ(back.payload.size(), 256U);
    for (auto b : back.payload) ASSERT_EQ(b, std::byte{0x5a});
    EXPECT_EQ(call(Method::cudaFree, pack(buffer)).error, kOk);
  }
};

// The well-behaved session beside the hostile one: a buffer with a known pattern, a stream and an
// event; check() asserts they are intact and usable.
struct Victim {
  RuntimeSession session;
  std::uint64_t buffer = 0, stream = 0, event = 0;
  std::vector<std::byte> pattern = std::vector<std::byte>(4096);

  Victim(const std::string& endpoint, const ft::TransportConfig& config) : session(endpoint, config, "victim") {
    for (std::size_t i = 0; i < pattern.size(); ++i) pattern[i] = std::byte(i * 7 + 3);
    if (!session.open()) return;
    buffer = session.malloc(pattern.size());
    EXPECT_EQ(session.write(buffer, pattern).error, kOk);
    stream = session.handle(Method::cudaStreamCreate);
    event = session.handle(Method::cudaEventCreate);
  }
  void check(const char* after) {
    SCOPED_TRACE(std::string("victim after ") + after);
    auto back = session.read(buffer, pattern.size());
    ASSERT_EQ(back.error, kOk) << back;
    EXPECT_EQ(back.payload, pattern);
    EXPECT_EQ(session.call(Method::cudaEventRecord, pack(event, stream)).error, kOk);
    EXPECT_EQ(session.call(Method::cudaStreamSynchronize, pack(stream)).error, kOk);
    session.expectWorks(after);
  }
};

ft::TransportConfig clientConfig() { return flyt::test::smallRegionConfig(); }

void expectMalformed(const Answer& a, const char* what) {
  expectRefused(a, kInvalidValue, TransportStatus::MALFORMED, what);
}

class HostileClient : public flyt::test::HostileFixture<Victim, RuntimeSession> {
 protected:
  HostileClient() : HostileFixture("flyt-hostile") {}
};

TEST_P(HostileClient, ForgedPointersStraddlingRangesAndOverflowingLengthsAreRefused) {
  RuntimeSession& h = *m_hostile;
  const std::uint64_t mine = h.malloc(1024);
  const std::uint64_t forged = 0x7f0000001000ULL;
  const std::vector<std::byte> bytes(64, std::byte{1});
  expectMalformed(h.memset(forged, 0, 64), "memset to a forged pointer");
  expectMalformed(h.write(forged, bytes), "copy to a forged pointer");
  expectMalformed(h.read(forged, 64), "copy from a forged pointer");
  expectMalformed(h.memset(mine + 1000, 0, 64), "memset straddling the end");
  expectMalformed(h.write(mine + 1000, bytes), "copy straddling the end");
  expectMalformed(h.read(mine + 1, 1024), "read straddling the end");
  expectMalformed(h.memset(mine + 8, 0, UINT64_MAX - 4), "memset with an overflowing length");
  expectMalformed(h.read(mine + 8, UINT64_MAX), "read with an overflowing length");
  expectMalformed(h.call(Method::cudaMemcpy, pack(mine, std::uint64_t{64}, std::int32_t{cudaMemcpyDeviceToDevice},
                                                  mine + 1000)),
                  "device-to-device from a straddling source");
  expectMalformed(h.call(Method::cudaMemset2D, pack(mine, std::uint64_t{512}, 0, std::uint64_t{512},
                                                    std::uint64_t{3})),
                  "2D memset past the end");
  expectMalformed(h.call(Method::cudaMemcpy2D, pack(mine, std::uint64_t{UINT64_MAX / 2}, std::uint64_t{0},
                                                    std::uint64_t{16}, std::uint64_t{16}, std::uint64_t{4},
                                                    std::int32_t{cudaMemcpyDeviceToHost}, std::uint64_t{0})),
                  "2D copy whose pitch overflows");
  // Generated, so only the dispatcher's check stands between them and the runtime on a GPU.
  expectMalformed(h.call(Method::cudaMemcpyPeer, pack(forged, 0, mine, 0, std::uint64_t{64})),
                  "cudaMemcpyPeer to a forged pointer");
  expectMalformed(h.call(Method::cudaMemset3D, pack(cudaPitchedPtr{reinterpret_cast<void*>(mine), 512, 512, 2}, 0,
                                                    cudaExtent{512, 2, 2})),
                  "3D memset past the end");
  expectMalformed(h.call(Method::cudaMemset3D, pack(cudaPitchedPtr{reinterpret_cast<void*>(forged), 64, 64, 1}, 0,
                                                    cudaExtent{64, 1, 1})),
                  "3D memset to a forged pointer");
  // Frees: forged, interior, double.
  expectMalformed(h.call(Method::cudaFree, pack(forged)), "cudaFree of a forged pointer");
  expectMalformed(h.call(Method::cudaFree, pack(mine + 16)), "cudaFree of an interior pointer");
  EXPECT_EQ(h.call(Method::cudaFree, pack(mine)).error, kOk);
  expectMalformed(h.call(Method::cudaFree, pack(mine)), "double cudaFree");
  expectMalformed(h.memset(mine, 0, 16), "memset of freed memory");
  bothStillWork("forged and out-of-range pointers");
}

TEST_P(HostileClient, TheOtherSessionsPointersStreamsAndEventsAreRefused) {
  RuntimeSession& h = *m_hostile;
  Victim& v = *m_victim;
  ASSERT_NE(v.buffer, 0U);
  expectMalformed(h.memset(v.buffer, 0, 16), "memset of the victim's allocation");
  expectMalformed(h.write(v.buffer, std::vector<std::byte>(16)), "copy into the victim's allocation");
  expectMalformed(h.read(v.buffer, 16), "read of the victim's allocation");
  expectMalformed(h.call(Method::cudaFree, pack(v.buffer)), "cudaFree of the victim's allocation");
  expectMalformed(h.call(Method::cudaStreamSynchronize, pack(v.stream)), "the victim's stream");
  expectMalformed(h.call(Method::cudaStreamDestroy, pack(v.stream)), "destroying the victim's stream");
  expectMalformed(h.call(Method::cudaEventRecord, pack(v.event, std::uint64_t{0})), "the victim's event");
  expectMalformed(h.call(Method::cudaEventSynchronize, pack(v.event)), "waiting on the victim's event");
  expectMalformed(h.call(Method::cudaEventDestroy, pack(v.event)), "destroying the victim's event");
  const std::uint64_t myStream = h.handle(Method::cudaStreamCreate);
  expectMalformed(h.call(Method::cudaStreamWaitEvent, pack(myStream, v.event, 0U)), "my stream, the victim's event");
  expectMalformed(h.call(Method::cudaMemsetAsync, pack(h.malloc(64), 0, std::uint64_t{64}, v.stream)),
                  "memset on the victim's stream");
  expectMalformed(h.call(Method::cudaMemcpyAsync, pack(v.buffer, std::uint64_t{16},
                                                       std::int32_t{cudaMemcpyDeviceToHost}, myStream)),
                  "async read of the victim's allocation");
  bothStillWork("the other session's handles");
}

TEST_P(HostileClient, BulkReferencesOutsideThePayloadOrRegionAreRefused) {
  RuntimeSession& h = *m_hostile;
  const std::uint64_t mine = h.malloc(4096);
  const std::vector<std::byte> bytes(64, std::byte{7});
  auto copyWith = [&](std::vector<BulkSpec> refs, std::uint64_t length = 64) {
    return h.call(Method::cudaMemcpy, pack(mine, length, std::int32_t{cudaMemcpyHostToDevice}), std::move(refs),
                  bytes);
  };
  expectMalformed(copyWith({{flyt::wire::INLINE_SEGMENT, 8, 64}}), "inline reference past the payload");
  expectMalformed(copyWith({{flyt::wire::INLINE_SEGMENT, 16, UINT64_MAX - 8}}, UINT64_MAX - 8),
                  "inline reference whose end overflows");
  expectMalformed(copyWith({{flyt::wire::INLINE_SEGMENT, 0, 32}}), "reference shorter than the copy");
  expectMalformed(copyWith({{flyt::wire::INLINE_SEGMENT, 0, 32}, {flyt::wire::INLINE_SEGMENT, 32, 32}}),
                  "two references");
  expectMalformed(copyWith({}), "no reference");
  expectMalformed(copyWith({{7, 0, 64}}), "a segment never announced");
  if (GetParam() == "shm") {
    // A real data region with its ring segment (id 0) announced: references beyond it are refused,
    // one inside it is served.
    auto region = ft::DataRegion::create(h.id(), clientConfig(), {.onCreated = [&](const ft::SegmentView& view) {
      return ft::announceSegment(h.channel(), view, 2s);
    }});
    ASSERT_TRUE(region) << region.error().describe();
    const std::uint64_t size = (*region)->segments().at(0).sizeBytes;
    expectMalformed(copyWith({{ft::kRingSegmentId, 0, 64}}), "the segment's header");
    expectMalformed(copyWith({{ft::kRingSegmentId, size, 64}}), "offset past the segment");
    expectMalformed(copyWith({{ft::kRingSegmentId, size - 32, 64}}), "range straddling the segment's end");
    expectMalformed(copyWith({{ft::kRingSegmentId, UINT64_MAX - 16, 64}}), "offset + length overflowing");
    expectMalformed(copyWith({{ft::kRingSegmentId + 1, 0, 64}}), "the next, unannounced segment");
    const std::uint64_t first = ft::kSegmentDataOffset;
    EXPECT_EQ(copyWith({{ft::kRingSegmentId, first, 64}}).error, kOk) << "a reference inside the ring";
  }
  bothStillWork("bad bulk references");
}

TEST_P(HostileClient, UnknownMethodIdsAreUnsupportedAndTheSessionGoesOn) {
  RuntimeSession& h = *m_hostile;
  for (std::uint32_t id : {0U, flyt::api::kMethodIdLimit, 0xffffffffU}) {
    auto a = h.call(id, pack(std::uint64_t{1}, std::uint64_t{2}));
    expectRefused(a, cudaErrorNotSupported, TransportStatus::UNSUPPORTED, "unknown method id");
  }
  // A known method with arguments of the wrong size.
  expectMalformed(h.call(Method::cudaMalloc, pack(std::uint32_t{64})), "short arguments");
  expectMalformed(h.call(Method::cudaMalloc, pack(std::uint64_t{64}, std::uint64_t{0})), "trailing arguments");
  bothStillWork("unknown method ids");
}

TEST_P(HostileClient, AbsurdLaunchGeometrySharedMemoryAndParameterBlocksAreRefused) {
  RuntimeSession& h = *m_hostile;
  const auto image = readFile(FLYT_HOSTILE_FATBIN);
  ASSERT_FALSE(image.empty());
  const std::uint64_t hash = flyt::api::fatbinHash(image);
  auto uploaded = h.call(Method::__cudaRegisterFatBinary, pack(hash, std::uint64_t{image.size()}, std::uint64_t{0}),
                         {BulkSpec{flyt::wire::INLINE_SEGMENT, 0, image.size()}}, image);
  ASSERT_EQ(uploaded.error, kOk) << uploaded;
  const auto module = uploaded.result<std::uint64_t>();
  const std::string name = "hostile_scale";
  auto found = h.call(Method::__cudaRegisterFunction,
                      concat(pack(module), std::as_bytes(std::span(name.data(), name.size()))));
  ASSERT_EQ(found.error, kOk) << found;
  const auto kernel = found.result<std::uint64_t>();
  ASSERT_EQ(found.result<std::uint32_t>(8), 2U);  // (float*, int)

  const std::uint64_t data = h.malloc(1024);
  const auto params = pack(data, std::int32_t{256}, std::int32_t{0});  // 12 bytes, padded to 16
  auto launch = [&](dim3 grid, dim3 block, std::uint64_t shared, std::span<const std::byte> p,
                    std::uint64_t k = 0) {
    return h.call(Method::cudaLaunchKernel,
                  concat(pack(k == 0 ? kernel : k, grid, block, shared, std::uint64_t{0}), p));
  };
  const std::span<const std::byte> twelve(params.data(), 12);
  ASSERT_EQ(launch(dim3(1), dim3(256), 0, twelve).error, kOk) << "the well-formed launch";
  const std::int32_t badConfig = cudaErrorInvalidConfiguration;
  for (auto [grid, block] : {std::pair{dim3(0), dim3(32)}, {dim3(1), dim3(0)}, {dim3(1, 0, 1), dim3(32)},
                            {dim3(1), dim3(2048)}, {dim3(1), dim3(32, 32, 2)}, {dim3(1), dim3(1, 1, 65)},
                            {dim3(1, 65536), dim3(32)}, {dim3(0xffffffffU), dim3(32)}}) {
    auto a = launch(grid, block, 0, twelve);
    EXPECT_EQ(a.error, badConfig) << grid.x << "," << grid.y << "," << grid.z << " / " << block.x << ","
                                  << block.y << "," << block.z << ": " << a;
  }
  expectRefused(launch(dim3(1), dim3(32), 1ULL << 20, twelve), kInvalidValue, TransportStatus::OK,
                "1 MiB of dynamic shared memory");
  expectRefused(launch(dim3(1), dim3(32), UINT64_MAX, twelve), kInvalidValue, TransportStatus::OK,
                "2^64-1 bytes of dynamic shared memory");
  expectMalformed(launch(dim3(1), dim3(32), 0, std::span(params.data(), 8)), "a short parameter block");
  expectMalformed(launch(dim3(1), dim3(32), 0, params), "a long parameter block");
  const std::vector<std::byte> huge(256 << 10);
  expectMalformed(launch(dim3(1), dim3(32), 0, huge), "a 256 KiB parameter block");
  expectMalformed(launch(dim3(1), dim3(32), 0, twelve, kernel + 100), "an unknown kernel id");
  expectMalformed(h.call(Method::cudaLaunchKernel, pack(kernel, dim3(1))), "truncated launch arguments");
  expectMalformed(h.call(Method::cudaLaunchKernelExC, concat(pack(kernel, dim3(2), dim3(32), std::uint64_t{0},
                                                                  std::uint64_t{0}, 0x80U, dim3(0, 0, 0)), twelve)),
                  "unknown launch flags");
  EXPECT_EQ(launch(dim3(1), dim3(256), 0, twelve).error, kOk) << "the well-formed launch, again";
  bothStillWork("absurd launches");
}

std::string transportName(const ::testing::TestParamInfo<std::string>& param) { return param.param; }
INSTANTIATE_TEST_SUITE_P(Transports, HostileClient, ::testing::Values("shm", "tcp"), transportName);

// Oversized frames end the session (TCP frames are checked before anything is read into memory):
// the worker exits with its "broken session" status, the node logs why, and goes on serving.
TEST(HostileTcpClient, OversizedFramesEndOnlyTheirSession) {
  flyt::test::holdHostRouDiLock();
  Node node({"FLYT_MAX_MESSAGE_BYTES=65536", "FLYT_MAX_PAYLOAD_BYTES=1048576"});
  ASSERT_TRUE(node.ready()) << node.log();
  Victim victim(node.tcp, clientConfig());
  ASSERT_TRUE(victim.session.open());
  auto ended = [&](RuntimeSession& s, const std::string& why) {
    EXPECT_TRUE(eventually(
        [&] {
          const std::string log = node.log();
          return log.find(why) != std::string::npos &&
                 std::regex_search(log, std::regex("session " + s.hex() + " ended: .*worker pid \\d+ exited with "
                                                   "status 1"));
        },
        5s))
        << node.log();
  };
  {
    RuntimeSession big(node.tcp, clientConfig(), "hostile");  // the client's own limits are the defaults
    const std::vector<std::byte> args(128 << 10);
    auto a = big.call(Method::cudaMalloc, args);
    EXPECT_EQ(a.status, TransportStatus::DISCONNECTED) << a;
    ended(big, "exceeds the 65536-byte limit");
  }
  victim.check("an oversized message");
  {
    RuntimeSession big(node.tcp, clientConfig(), "hostile");
    const std::vector<std::byte> payload(2 << 20);
    auto a = big.call(Method::cudaMemcpy, pack(std::uint64_t{0}, std::uint64_t{payload.size()},
                                              std::int32_t{cudaMemcpyHostToDevice}),
                      {BulkSpec{flyt::wire::INLINE_SEGMENT, 0, payload.size()}}, payload);
    EXPECT_EQ(a.status, TransportStatus::DISCONNECTED) << a;
    ended(big, "payload length 2097152 exceeds the 1048576-byte limit");
  }
  victim.check("an oversized payload");
  RuntimeSession fresh(node.tcp, clientConfig(), "after");
  ASSERT_TRUE(fresh.open()) << node.log();
  fresh.expectWorks("a new session after the oversized frames");
  EXPECT_EQ(node.log().find("killed by signal"), std::string::npos) << node.log();
}

}  // namespace
