// flytbench-probe: the part of flytbench that runs inside the measured process. It is an ordinary
// CUDA program (nvcc -cudart shared, no RPATH), so whichever libcudart.so.13 the loader picks serves
// it: NVIDIA's when flytbench runs it directly ("native"), Flyt's under `flyt run`.
//
// Line protocol (one JSON object per line on stdout, commands on stdin), so that the driver can start
// N probes and release them together:
//   -> {"kind":"info","cudart":PATH,"device":NAME,"devices":N}      first line, always
//      {"kind":"nodevice","error":NAME}                              instead, then exit 77
//   for every point, in the order the arguments define (see runMemcpy / runLatency):
//   -> {"kind":"ready",...point...}        warm-up (and verification) done
//   <- "go"                                measure now; "quit" or end of input: exit 0
//   -> {"kind":"result",...point..., "iterations":K,"start_ns":T0,"end_ns":T1,"seconds":S,...}
//   -> {"kind":"error","what":CALL,"error":NAME}   any CUDA error, then exit 1
// Stamps are CLOCK_MONOTONIC nanoseconds: the driver compares them across processes of one host.
//
// Only the protocol goes to stdout: at start the probe keeps its stdout for the protocol and points
// fd 1 at stderr, because a CUDA runtime may print there too (device printf; Flyt's GPU stand-in
// prints one line per kernel launch).
//
// Exit status: 0 done or told to quit, 1 CUDA error, 2 bad arguments, 3 the driver went away (a
// write to stdout failed), 77 no CUDA device.
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr int kExitCudaError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitDriverGone = 3;
constexpr int kExitNoDevice = 77;
constexpr int kMinIterations = 3;

FILE* g_protocol = nullptr;  // the original stdout

std::int64_t nowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string quoted(const std::string& text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
      out += escaped;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

// A failed write means the driver is gone: leave through exit(), so that the runtime closes its
// session cleanly (SIGPIPE is ignored for that reason).
void emit(const std::string& object) {
  if (std::fprintf(g_protocol, "{%s}\n", object.c_str()) < 0 || std::fflush(g_protocol) != 0) {
    std::exit(kExitDriverGone);
  }
}

// Exits the process: a CUDA error ends the sweep (the driver marks the point failed).
[[noreturn]] void fail(const std::string& what, cudaError_t error) {
  emit("\"kind\":\"error\",\"what\":" + quoted(what) + ",\"error\":" + quoted(cudaGetErrorName(error)));
  std::exit(kExitCudaError);
}

void check(cudaError_t error, const std::string& what) {
  if (error != cudaSuccess) fail(what, error);
}

// Blocks until the driver says "go" (true) or "quit"/end of input (false).
bool awaitGo() {
  char line[64];
  while (std::fgets(line, sizeof line, stdin) != nullptr) {
    if (std::strncmp(line, "go", 2) == 0) return true;
    if (std::strncmp(line, "quit", 4) == 0) return false;
  }
  return false;
}

std::string sizeLabel(std::size_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  int unit = 0;
  while (unit < 3 && bytes >= 1024 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++unit;
  }
  return std::to_string(bytes) + " " + units[unit];
}

std::vector<std::string> splitList(const char* text) {
  std::vector<std::string> items;
  std::string current;
  for (const char* p = text;; ++p) {
    if (*p == ',' || *p == '\0') {
      if (!current.empty()) items.push_back(current);
      current.clear();
      if (*p == '\0') break;
    } else {
      current += *p;
    }
  }
  return items;
}

struct Options {
  std::string test;
  std::vector<std::size_t> sizes;
  std::vector<std::string> directions{"h2d", "d2h"};
  std::vector<std::string> memories{"pinned", "pageable"};
  double minTime = 0.2;
  bool verify = false;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "flytbench-probe: %s\n"
               "usage: flytbench-probe memcpy --sizes BYTES,... [--directions h2d,d2h,d2d] "
               "[--memory pinned,pageable] [--min-time SEC] [--verify]\n"
               "       flytbench-probe latency [--min-time SEC]\n"
               "Run by flytbench, which speaks its line protocol (see the top of probe.cu).\n",
               why);
  std::exit(kExitUsage);
}

Options parse(int argc, char** argv) {
  if (argc < 2) usage("no test given");
  Options options;
  options.test = argv[1];
  if (options.test != "memcpy" && options.test != "latency") usage("the test is memcpy or latency");
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--verify") {
      options.verify = true;
      continue;
    }
    if (i + 1 >= argc) usage("an option is missing its value");
    const char* value = argv[++i];
    if (arg == "--sizes") {
      for (const auto& size : splitList(value)) {
        char* end = nullptr;
        const unsigned long long bytes = std::strtoull(size.c_str(), &end, 10);
        if (*end != '\0' || bytes == 0) usage("--sizes takes byte counts");
        options.sizes.push_back(std::size_t(bytes));
      }
    } else if (arg == "--directions") {
      options.directions = splitList(value);
    } else if (arg == "--memory") {
      options.memories = splitList(value);
    } else if (arg == "--min-time") {
      options.minTime = std::atof(value);
    } else {
      usage(("unknown option " + arg).c_str());
    }
  }
  if (options.test == "memcpy" && options.sizes.empty()) usage("memcpy needs --sizes");
  for (const auto& d : options.directions) {
    if (d != "h2d" && d != "d2h" && d != "d2d") usage("directions are h2d, d2h, d2d");
  }
  for (const auto& m : options.memories) {
    if (m != "pinned" && m != "pageable") usage("memory kinds are pinned, pageable");
  }
  return options;
}

// The runtime that serves this process: the library that provides cudaMalloc. dlsym, not
// &cudaMalloc, which may name the executable's PLT entry.
std::string runtimePath() {
  Dl_info info{};
  void* symbol = ::dlsym(RTLD_DEFAULT, "cudaMalloc");
  if (symbol == nullptr || ::dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return "unknown";
  char resolved[4096];
  return ::realpath(info.dli_fname, resolved) != nullptr ? resolved : info.dli_fname;
}

// The library whose cuInit the process resolves (Flyt's libcuda.so.1 under `flyt run --api driver`,
// where it is preloaded; "unknown" where the driver is not in the global scope).
std::string driverPath() {
  Dl_info info{};
  void* symbol = ::dlsym(RTLD_DEFAULT, "cuInit");
  if (symbol == nullptr || ::dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return "unknown";
  char resolved[4096];
  return ::realpath(info.dli_fname, resolved) != nullptr ? resolved : info.dli_fname;
}

void reportDevice() {
  int devices = 0;
  const cudaError_t counted = cudaGetDeviceCount(&devices);
  if (counted != cudaSuccess || devices == 0) {
    const char* name = counted != cudaSuccess ? cudaGetErrorName(counted) : "cudaErrorNoDevice";
    emit(std::string("\"kind\":\"nodevice\",\"error\":") + quoted(name));
    std::exit(kExitNoDevice);
  }
  check(cudaSetDevice(0), "cudaSetDevice 0");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties 0");
  emit("\"kind\":\"info\",\"cudart\":" + quoted(runtimePath()) + ",\"driver\":" + quoted(driverPath()) +
       ",\"device\":" + quoted(prop.name) +
       ",\"devices\":" + std::to_string(devices));
}

// ---- memcpy ----------------------------------------------------------------------------------

struct Buffers {
  char* device = nullptr;
  char* device2 = nullptr;                 // d2d target
  char* host[2] = {nullptr, nullptr};      // [pinned, pageable]: copied from / into
  char* readback[2] = {nullptr, nullptr};  // verification reads back here, same memory kind
};

// A pattern that differs per size, so a copy of an earlier point's bytes does not pass.
void fillPattern(char* data, std::size_t bytes) {
  std::uint64_t state = 0x9e3779b97f4a7c15ull ^ bytes;
  std::size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    std::memcpy(data + i, &state, 8);
  }
  for (; i < bytes; ++i) data[i] = char(state >> (8 * (i % 8)));
}

Buffers allocate(const Options& options) {
  const std::size_t largest = *std::max_element(options.sizes.begin(), options.sizes.end());
  const auto has = [](const std::vector<std::string>& list, const char* item) {
    return std::find(list.begin(), list.end(), item) != list.end();
  };
  const bool hostNeeded = has(options.directions, "h2d") || has(options.directions, "d2h");
  const bool d2d = has(options.directions, "d2d");
  const std::string what = " " + sizeLabel(largest);
  Buffers b;
  check(cudaMalloc(reinterpret_cast<void**>(&b.device), largest), "cudaMalloc" + what);
  if (d2d) check(cudaMalloc(reinterpret_cast<void**>(&b.device2), largest), "cudaMalloc" + what);
  // d2d verification goes through pageable memory.
  const bool pinned = hostNeeded && has(options.memories, "pinned");
  const bool pageable = (hostNeeded && has(options.memories, "pageable")) || (d2d && options.verify);
  const int copies = options.verify ? 2 : 1;
  for (int c = 0; c < copies && pinned; ++c) {
    char** slot = c == 0 ? &b.host[0] : &b.readback[0];
    check(cudaMallocHost(reinterpret_cast<void**>(slot), largest), "cudaMallocHost" + what);
    std::memset(*slot, 0, largest);
  }
  for (int c = 0; c < copies && pageable; ++c) {
    char** slot = c == 0 ? &b.host[1] : &b.readback[1];
    *slot = static_cast<char*>(std::malloc(largest));
    if (*slot == nullptr) {
      emit("\"kind\":\"error\",\"what\":" + quoted("malloc" + what) + ",\"error\":\"out of host memory\"");
      std::exit(kExitCudaError);
    }
    std::memset(*slot, 0, largest);  // touched: page faults are not part of the measurement
  }
  return b;
}

struct CopyPoint {
  std::string direction;
  std::string memory;  // pinned, pageable; "device" for d2d
  std::size_t bytes;
};

void copyOnce(const Buffers& b, const CopyPoint& p) {
  const int kind = p.memory == "pinned" ? 0 : 1;
  const std::string what = "cudaMemcpy " + p.direction + " " + sizeLabel(p.bytes);
  if (p.direction == "h2d") {
    check(cudaMemcpy(b.device, b.host[kind], p.bytes, cudaMemcpyHostToDevice), what);
  } else if (p.direction == "d2h") {
    check(cudaMemcpy(b.host[kind], b.device, p.bytes, cudaMemcpyDeviceToHost), what);
  } else {
    // A device-to-device cudaMemcpy returns before the copy is done: timing it alone would time how
    // fast copies are queued. Each copy is timed to its completion, as cudaMemcpy does itself for
    // the host directions.
    check(cudaMemcpy(b.device2, b.device, p.bytes, cudaMemcpyDeviceToDevice), what);
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize after " + what);
  }
}

// Pattern to the device and back (through the second device buffer for d2d), compared.
bool verify(const Buffers& b, const CopyPoint& p) {
  const int kind = p.memory == "pinned" ? 0 : 1;
  const std::string what = "cudaMemcpy (verification) " + sizeLabel(p.bytes);
  fillPattern(b.host[kind], p.bytes);
  std::memset(b.readback[kind], 0, p.bytes);
  check(cudaMemcpy(b.device, b.host[kind], p.bytes, cudaMemcpyHostToDevice), what);
  const char* source = b.device;
  if (p.direction == "d2d") {
    check(cudaMemset(b.device2, 0, p.bytes), "cudaMemset (verification)");
    check(cudaMemcpy(b.device2, b.device, p.bytes, cudaMemcpyDeviceToDevice), what);
    source = b.device2;
  }
  check(cudaMemcpy(b.readback[kind], source, p.bytes, cudaMemcpyDeviceToHost), what);
  return std::memcmp(b.host[kind], b.readback[kind], p.bytes) == 0;
}

std::string describe(const CopyPoint& p) {
  return "\"test\":\"memcpy\",\"direction\":\"" + p.direction + "\",\"memory\":\"" + p.memory +
         "\",\"bytes\":" + std::to_string(p.bytes);
}

std::string timing(long long iterations, std::int64_t start, std::int64_t end) {
  char text[160];
  std::snprintf(text, sizeof text, ",\"iterations\":%lld,\"start_ns\":%lld,\"end_ns\":%lld,\"seconds\":%.9f",
                iterations, (long long)start, (long long)end, double(end - start) / 1e9);
  return text;
}

// Returns false when the driver said quit.
bool measureCopy(const Options& options, const Buffers& b, const CopyPoint& p) {
  copyOnce(b, p);  // warm-up: first-touch costs of the runtime and the transport are not measured
  const char* verified = "null";
  if (options.verify) verified = verify(b, p) ? "true" : "false";
  emit("\"kind\":\"ready\"," + describe(p));
  if (!awaitGo()) return false;
  const std::int64_t start = nowNs();
  const std::int64_t minNs = std::int64_t(options.minTime * 1e9);
  long long iterations = 0;
  std::int64_t end = start;
  do {
    copyOnce(b, p);
    ++iterations;
    end = nowNs();
  } while (iterations < kMinIterations || end - start < minNs);
  // A copy from pageable memory may return once its last bytes are staged, before they arrive.
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize after cudaMemcpy " + p.direction);
  end = nowNs();
  const double seconds = double(end - start) / 1e9;
  char rate[64];
  std::snprintf(rate, sizeof rate, ",\"gbps\":%.6f", double(p.bytes) * double(iterations) / seconds / 1e9);
  emit("\"kind\":\"result\"," + describe(p) + timing(iterations, start, end) + rate +
       ",\"verified\":" + verified);
  return true;
}

// Points in order: per memory kind, per host direction, per size; then d2d per size (once: device
// memory on both sides, the memory kinds do not apply).
int runMemcpy(const Options& options) {
  const Buffers buffers = allocate(options);
  std::vector<CopyPoint> points;
  for (const auto& memory : options.memories) {
    for (const auto& direction : options.directions) {
      if (direction == "d2d") continue;
      for (std::size_t bytes : options.sizes) points.push_back({direction, memory, bytes});
    }
  }
  if (std::find(options.directions.begin(), options.directions.end(), "d2d") != options.directions.end()) {
    for (std::size_t bytes : options.sizes) points.push_back({"d2d", "device", bytes});
  }
  for (const auto& point : points) {
    if (!measureCopy(options, buffers, point)) return 0;
  }
  return 0;
}

// ---- latency ---------------------------------------------------------------------------------

__global__ void emptyKernel() {}

struct LatencyContext {
  char* device8 = nullptr;
  char host8[8] = {};
  cudaStream_t stream = nullptr;
};

// One call (or, for launch_enqueue, `count` launches and one synchronise).
void latencyCall(LatencyContext& c, const std::string& point, long long count) {
  if (point == "d2h_8b") {
    check(cudaMemcpy(c.host8, c.device8, 8, cudaMemcpyDeviceToHost), "cudaMemcpy d2h 8 B");
  } else if (point == "stream_query") {
    const cudaError_t state = cudaStreamQuery(c.stream);
    if (state != cudaSuccess && state != cudaErrorNotReady) fail("cudaStreamQuery", state);
  } else if (point == "launch_enqueue") {
    for (long long i = 0; i < count; ++i) emptyKernel<<<1, 1, 0, c.stream>>>();
    check(cudaGetLastError(), "emptyKernel<<<1,1>>>");
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  } else if (point == "launch_sync") {
    emptyKernel<<<1, 1, 0, c.stream>>>();
    check(cudaGetLastError(), "emptyKernel<<<1,1>>>");
    check(cudaStreamSynchronize(c.stream), "cudaStreamSynchronize");
  } else {
    void* block = nullptr;
    check(cudaMalloc(&block, 1 << 20), "cudaMalloc 1 MiB");
    check(cudaFree(block), "cudaFree 1 MiB");
  }
}

bool measureLatency(const Options& options, LatencyContext& c, const std::string& point) {
  latencyCall(c, point, 1);  // warm-up (the first launch also loads the module)
  emit("\"kind\":\"ready\",\"test\":\"latency\",\"point\":\"" + point + "\"");
  if (!awaitGo()) return false;
  const std::int64_t minNs = std::int64_t(options.minTime * 1e9);
  long long iterations = 0;
  std::int64_t start = nowNs();
  std::int64_t end = start;
  if (point == "launch_enqueue") {
    // Batches of kBatch launches and one synchronise, repeated until min-time; the synchronise is
    // shared by the batch. Not one batch growing until it lasts min-time: a GPU's launch queue holds
    // a few thousand entries, beyond which a launch waits for a kernel to finish (that would time
    // the kernels, not the enqueue), and the same batch for every transport keeps them comparable.
    // (It also keeps the GPU stand-in's reply small: it sends back a line per launch.)
    constexpr long long kBatch = 1024;
    do {
      latencyCall(c, point, kBatch);
      iterations += kBatch;
      end = nowNs();
    } while (end - start < minNs);
  } else {
    do {
      latencyCall(c, point, 1);
      ++iterations;
      end = nowNs();
    } while (iterations < kMinIterations || end - start < minNs);
  }
  char us[64];
  std::snprintf(us, sizeof us, ",\"us\":%.4f", double(end - start) / 1e3 / double(iterations));
  emit("\"kind\":\"result\",\"test\":\"latency\",\"point\":\"" + point + "\"" +
       timing(iterations, start, end) + us);
  return true;
}

int runLatency(const Options& options) {
  LatencyContext context;
  check(cudaMalloc(reinterpret_cast<void**>(&context.device8), 8), "cudaMalloc 8 B");
  check(cudaMemset(context.device8, 0, 8), "cudaMemset 8 B");
  check(cudaStreamCreateWithFlags(&context.stream, cudaStreamNonBlocking), "cudaStreamCreate");
  for (const char* point : {"d2h_8b", "stream_query", "launch_enqueue", "launch_sync", "malloc_free_1mib"}) {
    if (!measureLatency(options, context, point)) return 0;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  const int protocolFd = ::dup(STDOUT_FILENO);
  if (protocolFd < 0 || ::dup2(STDERR_FILENO, STDOUT_FILENO) < 0 ||
      (g_protocol = ::fdopen(protocolFd, "w")) == nullptr) {
    std::perror("flytbench-probe: cannot set up the protocol stream");
    return kExitUsage;
  }
  reportDevice();
  return options.test == "memcpy" ? runMemcpy(options) : runLatency(options);
}
