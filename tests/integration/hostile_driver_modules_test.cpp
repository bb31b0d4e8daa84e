// The hostile driver-cut client (hostile_driver_test.cpp, which instantiates these over shm and TCP)
// against modules, launches, image uploads and graphs: absurd launch geometry, dynamic shared memory
// and parameter blocks, forged functions and streams, an unloaded module's or library's functions
// and globals, image chunks that announce more than they bring or arrive out of order, graph nodes
// outside the session's memory or run after it was freed.
#include <cuda.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <array>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "flyt/api/codec.hpp"
#include "flyt/api/cu_methods.hpp"
#include "flyt/api/fatbin.hpp"
#include "hostile_driver.hpp"

namespace {

using namespace std::chrono_literals;
using namespace flyt::test::hostile_driver;
using flyt::test::Answer;
using flyt::test::BulkSpec;
using flyt::test::concat;
using flyt::test::expectRefused;
using flyt::test::pack;

// An image uploaded (one chunk) and loaded with `load` as libcuda.so.1 does (modules.cpp): the
// module's or library's id.
std::uint64_t loadImage(DriverSession& s, std::span<const std::byte> image, Method load = Method::cuModuleLoadData) {
  const std::uint64_t hash = flyt::api::fatbinHash(image);
  auto sent = s.call(Method::flytUploadImage, pack(hash, std::uint64_t{image.size()}, std::uint64_t{0}),
                     {BulkSpec{flyt::wire::INLINE_SEGMENT, 0, image.size()}}, image);
  EXPECT_EQ(sent.error, kOk) << sent;
  auto loaded = s.call(load, pack(hash, std::uint64_t{image.size()}));
  EXPECT_EQ(loaded.error, kOk) << loaded;
  return loaded.result<std::uint64_t>();
}

// cuLaunchKernel's arguments (interpose/driver/launch.cpp): {u64 function, u32 grid x y z, block
// x y z, u32 shared bytes, u64 stream, u32 block bytes, block}.
std::vector<std::byte> launchArgs(std::uint64_t function, std::array<std::uint32_t, 6> dims, std::uint32_t shared,
                                  std::uint64_t stream, std::span<const std::byte> params) {
  return concat(pack(function, dims, shared, stream, static_cast<std::uint32_t>(params.size())), params);
}

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

TEST_P(HostileDriver, AbsurdLaunchesForgedFunctionsAndBadParameterBlocksAreRefused) {
  DriverSession& h = *m_hostile;
  const auto image = flyt::test::readFile(FLYT_HOSTILE_FATBIN);
  ASSERT_FALSE(image.empty());
  const std::uint64_t module = loadImage(h, image);
  auto found = h.call(Method::cuModuleGetFunction, withName(pack(module), "hostile_scale"));
  ASSERT_EQ(found.error, kOk) << found;
  const auto function = found.result<std::uint64_t>();
  ASSERT_EQ(found.result<std::uint32_t>(8), 2U);    // (float*, int)
  ASSERT_EQ(found.result<std::uint32_t>(12), 12U);  // parameter bytes
  const auto params = pack(h.alloc(1024), std::int32_t{256});
  const std::uint64_t stream = h.create(Method::cuStreamCreate);
  auto launch = [&](std::array<std::uint32_t, 6> dims, std::uint32_t shared = 0, std::span<const std::byte> p = {},
                    std::uint64_t f = 0, std::uint64_t on = 0) {
    return h.call(Method::cuLaunchKernel, launchArgs(f == 0 ? function : f, dims, shared, on == 0 ? stream : on,
                                                     p.empty() ? std::span<const std::byte>(params) : p));
  };
  ASSERT_EQ(launch({1, 1, 1, 256, 1, 1}).error, kOk) << "the well-formed launch";
  for (auto dims : std::vector<std::array<std::uint32_t, 6>>{
           {0, 1, 1, 32, 1, 1}, {1, 0, 1, 32, 1, 1}, {1, 1, 1, 0, 1, 1}, {1, 1, 1, 2048, 1, 1}, {1, 1, 1, 32, 32, 2},
           {1, 1, 1, 1, 1, 65}, {1, 65536, 1, 32, 1, 1}, {1, 1, 65536, 32, 1, 1}, {0x80000000U, 1, 1, 32, 1, 1},
           {0xffffffffU, 0xffffffffU, 0xffffffffU, 0xffffffffU, 0xffffffffU, 0xffffffffU}}) {
    expectDriverSays(launch(dims), CUDA_ERROR_INVALID_VALUE,
                     fmt::format("grid {}x{}x{} block {}x{}x{}", dims[0], dims[1], dims[2], dims[3], dims[4], dims[5])
                         .c_str());
  }
  EXPECT_EQ(launch({1, 1, 1, 32, 1, 1}, 48 << 10).error, kOk) << "48 KiB of dynamic shared memory";
  expectDriverSays(launch({1, 1, 1, 32, 1, 1}, (48 << 10) + 1), CUDA_ERROR_INVALID_VALUE,
                   "more dynamic shared memory than the kernel allows");
  expectDriverSays(launch({1, 1, 1, 32, 1, 1}, 0xffffffffU), CUDA_ERROR_INVALID_VALUE,
                   "2^32-1 bytes of dynamic shared memory");
  // Parameter blocks: shorter than the kernel's parameters, longer than any kernel takes, a length
  // that runs past the arguments, trailing bytes.
  expectMalformed(launch({1, 1, 1, 32, 1, 1}, 0, std::span(params).first(8)), "an 8-byte parameter block");
  const std::vector<std::byte> huge(32768);
  expectMalformed(launch({1, 1, 1, 32, 1, 1}, 0, huge), "a 32 KiB parameter block");
  auto lying = launchArgs(function, {1, 1, 1, 32, 1, 1}, 0, stream, params);
  lying[8 + 24 + 4 + 8] = std::byte{64};  // the block's length field
  expectMalformed(h.call(Method::cuLaunchKernel, lying), "a block length past the arguments");
  expectMalformed(h.call(Method::cuLaunchKernel, concat(launchArgs(function, {1, 1, 1, 32, 1, 1}, 0, stream, params),
                                                        std::vector<std::byte>(3))),
                  "trailing bytes after the block");
  expectMalformed(h.call(Method::cuLaunchKernel, pack(function, std::uint32_t{1})), "truncated launch arguments");
  // Functions and streams that are not the session's.
  expectNotMine(launch({1, 1, 1, 32, 1, 1}, 0, {}, kForgedHandle), "a function never looked up");
  expectNotMine(launch({1, 1, 1, 32, 1, 1}, 0, {}, module), "a module launched as a function");
  expectNotMine(launch({1, 1, 1, 32, 1, 1}, 0, {}, stream), "a stream launched as a function");
  expectNotMine(launch({1, 1, 1, 32, 1, 1}, 0, {}, 0, kForgedHandle), "a stream never created");
  expectNotMine(launch({1, 1, 1, 32, 1, 1}, 0, {}, 0, m_victim->stream), "the victim's stream");
  expectMalformed(h.call(Method::cuLaunchKernel, launchArgs(0, {1, 1, 1, 32, 1, 1}, 0, stream, params)),
                  "a null function");
  // cuLaunchKernelEx: {the same up to the stream, u32 attribute count, attributes, u32 block bytes, block}.
  auto launchEx = [&](std::vector<CUlaunchAttribute> attributes) {
    auto args = pack(function, std::array<std::uint32_t, 6>{1, 1, 1, 32, 1, 1}, std::uint32_t{0}, stream,
                     static_cast<std::uint32_t>(attributes.size()));
    for (const auto& attribute : attributes) args = concat(std::move(args), pack(attribute));
    return h.call(Method::cuLaunchKernelEx,
                  concat(concat(std::move(args), pack(static_cast<std::uint32_t>(params.size()))), params));
  };
  EXPECT_EQ(launchEx({}).error, kOk) << "cuLaunchKernelEx without attributes";
  expectMalformed(launchEx(std::vector<CUlaunchAttribute>(65)), "65 launch attributes");
  CUlaunchAttribute event{}, unknown{};
  event.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT;  // a handle inside the value
  unknown.id = static_cast<CUlaunchAttributeID>(0x7fff);
  expectRefused(launchEx({event}), CUDA_ERROR_NOT_SUPPORTED, TransportStatus::UNSUPPORTED, "a launch attribute with an event");
  expectRefused(launchEx({unknown}), CUDA_ERROR_NOT_SUPPORTED, TransportStatus::UNSUPPORTED, "an unknown launch attribute");
  EXPECT_EQ(launch({1, 1, 1, 256, 1, 1}).error, kOk) << "the well-formed launch, again";
  bothStillWork("absurd launches");
}

TEST_P(HostileDriver, AnUnloadedModulesFunctionsAndGlobalsAreRefused) {
  DriverSession& h = *m_hostile;
  const auto image = flyt::test::readFile(FLYT_HOSTILE_FATBIN);
  ASSERT_FALSE(image.empty());
  const auto params = pack(h.alloc(1024), std::int32_t{256});
  const std::vector<std::byte> table(256, std::byte{3});
  for (Method load : {Method::cuModuleLoadData, Method::cuLibraryLoadData}) {
    const bool library = load == Method::cuLibraryLoadData;
    SCOPED_TRACE(library ? "library" : "module");
    const std::uint64_t owner = loadImage(h, image, load);
    auto lookedUp = library ? h.call(Method::cuLibraryGetKernel, withName(pack(owner), "hostile_scale"))
                            : h.call(Method::cuModuleGetFunction, withName(pack(owner), "hostile_scale"));
    ASSERT_EQ(lookedUp.error, kOk) << lookedUp;
    std::uint64_t function = lookedUp.result<std::uint64_t>();
    std::uint64_t kernel = 0;
    if (library) {
      kernel = function;
      auto made = h.call(Method::cuKernelGetFunction, pack(kernel));
      ASSERT_EQ(made.error, kOk) << made;
      function = made.result<std::uint64_t>();
    }
    auto global = h.call(library ? Method::cuLibraryGetGlobal : Method::cuModuleGetGlobal_v2,
                         withName(pack(owner), "hostile_table"));
    ASSERT_EQ(global.error, kOk) << global;
    const auto address = global.result<std::uint64_t>();
    ASSERT_EQ(global.result<std::uint64_t>(8), table.size());
    EXPECT_EQ(h.write(address, table).error, kOk);
    EXPECT_EQ(h.read(address, table.size()).payload, table);
    EXPECT_EQ(h.call(Method::cuLaunchKernel, launchArgs(function, {1, 1, 1, 32, 1, 1}, 0, 0, params)).error, kOk);

    EXPECT_EQ(h.call(library ? Method::cuLibraryUnload : Method::cuModuleUnload, pack(owner)).error, kOk);
    expectMalformed(h.write(address, table), "a copy into the unloaded image's global");
    expectMalformed(h.read(address, table.size()), "a copy from the unloaded image's global");
    expectNotMine(h.call(Method::cuLaunchKernel, launchArgs(function, {1, 1, 1, 32, 1, 1}, 0, 0, params)),
                  "a launch of the unloaded image's function");
    if (library) {
      expectNotMine(h.call(Method::cuLaunchKernel, launchArgs(kernel, {1, 1, 1, 32, 1, 1}, 0, 0, params)),
                    "a launch of the unloaded library's kernel");
      expectNotMine(h.call(Method::cuKernelGetFunction, pack(kernel)), "the unloaded library's kernel");
    }
    expectNotMine(h.call(library ? Method::cuLibraryUnload : Method::cuModuleUnload, pack(owner)), "a second unload");
  }
  bothStillWork("unloaded modules");
}

TEST_P(HostileDriver, ImageUploadsHoldOnlyTheBytesSentAndInOrder) {
  DriverSession& h = *m_hostile;
  const pid_t worker = workerOf(m_node->log(), h.hex());
  ASSERT_GT(worker, 0) << m_node->log();
  const std::uint64_t before = residentBytes(worker);
  const std::vector<std::byte> chunk(64, std::byte{9});
  auto upload = [&](std::uint64_t hash, std::uint64_t total, std::uint64_t offset, std::span<const std::byte> bytes) {
    return h.call(Method::flytUploadImage, pack(hash, total, offset),
                  {BulkSpec{flyt::wire::INLINE_SEGMENT, 0, bytes.size()}}, bytes);
  };
  // Chunks that announce the largest image there may be: the worker must not make room for it.
  for (std::uint64_t hash = 1; hash <= 2; ++hash) {
    EXPECT_EQ(upload(hash, flyt::api::kMaxFatbinBytes, 0, chunk).error, kOk);
  }
  EXPECT_LT(residentBytes(worker), before + (256 << 20)) << "the worker's resident memory after announced images";
  expectMalformed(upload(1, flyt::api::kMaxFatbinBytes, 4096, chunk), "a chunk that skips ahead");
  expectMalformed(upload(1, 1024, 64, chunk), "a chunk of the same image with another size");
  expectMalformed(upload(3, 1024, 64, chunk), "a first chunk past offset 0");
  expectMalformed(upload(3, 100, 0, std::vector<std::byte>(101)), "a chunk longer than the image");
  expectMalformed(upload(3, 0, 0, chunk), "an image of 0 bytes");
  expectMalformed(upload(3, flyt::api::kMaxFatbinBytes + 1, 0, chunk), "an image larger than any fatbin");
  expectMalformed(upload(3, 64, 0, {}), "an empty chunk");
  expectMalformed(h.call(Method::cuModuleLoadData, pack(std::uint64_t{1}, flyt::api::kMaxFatbinBytes)),
                  "loading an image not uploaded whole");
  expectMalformed(h.call(Method::cuModuleLoadData, pack(std::uint64_t{99}, std::uint64_t{64})),
                  "loading an image never uploaded");
  // The bytes of a real image under another hash: refused at the load, whatever they hold.
  const auto image = flyt::test::readFile(FLYT_HOSTILE_FATBIN);
  EXPECT_EQ(upload(4, image.size(), 0, image).error, kOk);
  expectMalformed(h.call(Method::cuModuleLoadData, pack(std::uint64_t{4}, std::uint64_t{image.size()})),
                  "an image whose bytes do not match its hash");
  // In two chunks, and again from offset 0 after a broken upload: served.
  const std::uint64_t hash = flyt::api::fatbinHash(image);
  const std::size_t half = image.size() / 2;
  EXPECT_EQ(upload(hash, image.size(), 0, std::span(image).first(half)).error, kOk);
  EXPECT_EQ(upload(hash, image.size(), 0, std::span(image).first(half)).error, kOk);
  EXPECT_EQ(upload(hash, image.size(), half, std::span(image).subspan(half)).error, kOk);
  EXPECT_EQ(h.call(Method::cuModuleLoadData, pack(hash, std::uint64_t{image.size()})).error, kOk);
  bothStillWork("image uploads");
}

TEST_P(HostileDriver, GraphNodesOutsideTheSessionsMemoryAreRefusedAndFreedMemoryFaults) {
  DriverSession& h = *m_hostile;
  const auto image = flyt::test::readFile(FLYT_HOSTILE_FATBIN);
  ASSERT_FALSE(image.empty());
  auto found = h.call(Method::cuModuleGetFunction, withName(pack(loadImage(h, image)), "hostile_scale"));
  ASSERT_EQ(found.error, kOk) << found;
  const auto function = found.result<std::uint64_t>();
  const std::uint64_t from = h.alloc(4096), to = h.alloc(4096);
  auto made = h.call(Method::cuGraphCreate, pack(0U));
  ASSERT_EQ(made.error, kOk) << made;
  const auto graph = made.result<std::uint64_t>();
  // Nodes: {u64 graph, u64 dependency count, dependencies} + the node's own arguments (graphs.cpp).
  auto memsetNode = [&](CUdeviceptr dst, std::size_t width, std::size_t height, std::size_t pitch,
                        unsigned elementSize = 1) {
    CUDA_MEMSET_NODE_PARAMS p{};
    p.dst = dst;
    p.pitch = pitch;
    p.value = 0x42;
    p.elementSize = elementSize;
    p.width = width;
    p.height = height;
    return h.call(Method::cuGraphAddMemsetNode, pack(graph, std::uint64_t{0}, p, h.context()));
  };
  auto copyNode = [&](CUdeviceptr dst, CUdeviceptr src, std::size_t width, std::vector<std::uint64_t> after = {},
                      CUmemorytype srcType = CU_MEMORYTYPE_DEVICE) {
    CUDA_MEMCPY3D p{};
    p.srcMemoryType = srcType;
    p.srcDevice = src;
    p.dstMemoryType = CU_MEMORYTYPE_DEVICE;
    p.dstDevice = dst;
    p.WidthInBytes = width;
    p.Height = 1;
    p.Depth = 1;
    auto args = pack(graph, std::uint64_t{after.size()});
    for (auto node : after) args = concat(std::move(args), pack(node));
    return h.call(Method::cuGraphAddMemcpyNode, concat(std::move(args), pack(p, h.context())));
  };
  expectMalformed(memsetNode(kForgedPointer, 64, 1, 64), "a memset node on a forged pointer");
  expectMalformed(memsetNode(from, 4097, 1, 4097), "a memset node straddling the end");
  expectMalformed(memsetNode(from, 64, 65, 64), "a 2D memset node past the end");
  expectMalformed(memsetNode(from, 16, 1, 16, 3), "a memset node of 3-byte elements");
  expectMalformed(copyNode(kForgedPointer, from, 64), "a copy node to a forged pointer");
  expectMalformed(copyNode(to + 64, from, 4096), "a copy node straddling the end");
  expectMalformed(copyNode(to, m_victim->buffer, 64), "a copy node from the victim's allocation");
  expectRefused(copyNode(to, from, 64, {}, CU_MEMORYTYPE_HOST), CUDA_ERROR_NOT_SUPPORTED, TransportStatus::UNSUPPORTED,
                "a copy node from host memory");
  expectNotMine(copyNode(to, from, 64, {kForgedHandle}), "a dependency never added");
  const auto params = pack(from, std::int32_t{256});
  auto kernelNode = [&](std::uint64_t f, std::span<const std::byte> p) {
    return h.call(Method::cuGraphAddKernelNode_v2,
                  concat(pack(graph, std::uint64_t{0}), launchArgs(f, {1, 1, 1, 32, 1, 1}, 0, 0, p)));
  };
  expectMalformed(kernelNode(function, std::span(params).first(8)), "a kernel node with a short parameter block");
  expectNotMine(kernelNode(kForgedHandle, params), "a kernel node of a function never looked up");
  // A well-formed graph runs; once its memory is freed, running it again faults (at the launch or
  // at the next synchronisation, as on a GPU) and writes nothing.
  auto set = memsetNode(from, 4096, 1, 4096);
  ASSERT_EQ(set.error, kOk) << set;
  auto copied = copyNode(to, from, 4096, {set.result<std::uint64_t>()});
  ASSERT_EQ(copied.error, kOk) << copied;
  EXPECT_EQ(kernelNode(function, params).error, kOk);
  auto exec = h.call(Method::cuGraphInstantiateWithFlags, pack(graph, std::uint64_t{0}));
  ASSERT_EQ(exec.error, kOk) << exec;
  const auto instance = exec.result<std::uint64_t>();
  EXPECT_EQ(h.call(Method::cuGraphLaunch, pack(instance, std::uint64_t{0})).error, kOk);
  EXPECT_EQ(h.call(Method::cuCtxSynchronize, {}).error, kOk);
  EXPECT_EQ(h.read(to, 4096).payload, std::vector<std::byte>(4096, std::byte{0x42}));
  EXPECT_EQ(h.free(from).error, kOk);
  EXPECT_EQ(h.free(to).error, kOk);
  const auto launched = h.call(Method::cuGraphLaunch, pack(instance, std::uint64_t{0}));
  const auto synchronised = h.call(Method::cuCtxSynchronize, {});
  EXPECT_TRUE(launched.error == CUDA_ERROR_ILLEGAL_ADDRESS || synchronised.error == CUDA_ERROR_ILLEGAL_ADDRESS)
      << "a graph on freed memory: " << launched << "; then " << synchronised;
  EXPECT_EQ(h.call(Method::cuGraphExecDestroy, pack(instance)).error, kOk);
  EXPECT_EQ(h.call(Method::cuGraphDestroy, pack(graph)).error, kOk);
  expectNotMine(h.call(Method::cuGraphLaunch, pack(instance, std::uint64_t{0})), "a destroyed graph");
  bothStillWork("graph nodes");
}

}  // namespace
