// The parts of the hostile driver-cut tests (hostile_driver_test.cpp, hostile_driver_modules_test.cpp):
// a driver session spoken by hand and set up as Flyt's libcuda.so.1 sets one up (device discovery,
// device 0's primary context retained and made current: interpose/driver/driver_client.cpp and
// contexts.cpp), the well-behaved victim session beside it, and the fixture that starts a real
// flyt-node (GPU stand-in) for each test. Method ids come from flyt/api/cu_methods.hpp, arguments
// are packed as cu_specs.hpp and the hand-written handlers' wire comments say.
#pragma once

#include <cuda.h>

#include <gtest/gtest.h>

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "flyt/api/codec.hpp"
#include "flyt/api/cu_methods.hpp"
#include "hostile_fixture.hpp"
#include "process_helpers.hpp"
#include "raw_session.hpp"

namespace flyt::test::hostile_driver {

using api::cu::Method;
using wire::TransportStatus;
namespace ft = transport;

constexpr std::int32_t kOk = CUDA_SUCCESS;
constexpr std::uint64_t kForgedPointer = 0x7f0000001000ULL;
constexpr std::uint64_t kForgedHandle = 0x7777770ULL;  // shaped like the worker's ids, never one

inline void expectMalformed(const Answer& a, const char* what) {
  expectRefused(a, CUDA_ERROR_INVALID_VALUE, TransportStatus::MALFORMED, what);
}
// A handle that is not the session's, or not of the kind the argument takes.
inline void expectNotMine(const Answer& a, const char* what) {
  expectRefused(a, CUDA_ERROR_INVALID_HANDLE, TransportStatus::MALFORMED, what);
}
// Refused by the driver itself (the worker's checks let it through).
inline void expectDriverSays(const Answer& a, CUresult error, const char* what) {
  expectRefused(a, error, TransportStatus::OK, what);
}

inline std::vector<std::byte> withName(std::vector<std::byte> args, std::string_view name) {
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


// The fixture of both driver-cut files (hostile_fixture.hpp).
class HostileDriver : public flyt::test::HostileFixture<Victim, DriverSession> {
 protected:
  HostileDriver() : HostileFixture("flyt-hostile-driver") {}
};

// cuMemCreate of `bytes` of device 0's memory (pinned): {u64 size, u64 flags} + the properties inline.
inline Answer memCreate(DriverSession& s, std::uint64_t bytes) {
  CUmemAllocationProp prop{};
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  return s.call(Method::cuMemCreate, pack(bytes, std::uint64_t{0}), {{flyt::wire::INLINE_SEGMENT, 0, sizeof prop}},
                std::as_bytes(std::span(&prop, 1)));
}

}  // namespace flyt::test::hostile_driver
