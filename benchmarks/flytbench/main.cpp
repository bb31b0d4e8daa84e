// flytbench: memcpy throughput, call latency and PyTorch ResNet-50 iteration times through Flyt
// against native CUDA, in one run.
//
// flytbench drives; flytbench-probe (probe.cu) measures, inside a process that loads either
// NVIDIA's runtime (native) or Flyt's (`flyt run`, over shm or tcp); for `flytbench torch`,
// torch_probe.py does, natively or on Flyt's driver. README.md next to this file describes the
// commands, the options and the output.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <ctime>
#include <fstream>
#include <optional>
#include <set>

#include "model.hpp"
#include "private_node.hpp"
#include "process.hpp"
#include "raw_socket_baseline.hpp"
#include "report.hpp"
#include "svg_plot.hpp"
#include "sweep.hpp"

namespace {

namespace fs = std::filesystem;
namespace fb = flyt::flytbench;

constexpr int kExitFailed = 1;  // something measured failed (the report says what)
constexpr int kExitSetup = 2;   // nothing could be measured: bad options, no node, missing files

constexpr const char* kFooter = R"(
Transports: native (the probe with NVIDIA's runtime: flytbench drops Flyt's runtime from
LD_LIBRARY_PATH and unsets LD_PRELOAD and FLYT_SERVER, and refuses a probe that still loaded Flyt's),
shm and tcp (the probe under `flyt run --server URL`). Unless --server-shm/--server-tcp name nodes,
flytbench starts one private flyt-node for the run and stops it at the end.

Examples:
  flytbench memcpy                                       the headline table (about a minute on a GPU)
  flytbench memcpy --sizes 64M,1G --directions h2d,d2h,d2d --plot memcpy.svg
  flytbench memcpy --clients 4 --transports native,shm   4 processes per transport, released together
  flytbench memcpy --server-tcp tcp://gpu1:7070 --transports tcp   a node on another host
  flytbench latency --json latency.json
  flytbench memcpy --executor standin --min-time 0.01    no GPU: the stand-in (a test double) checks
                                                         the path, the figures mean nothing
Exit status: 0 all measured, 1 a point or transport failed, 2 nothing could be run, 128+N signal N.
See benchmarks/flytbench/README.md for the columns and what each latency point measures.)";

constexpr const char* kTorchFooter = R"(
Points: resnet50_infer_b32 (torchvision ResNet-50, random weights, eval, no_grad, a batch of 32
3x224x224 fp32 images), resnet50_train_b32 (one training step on such a batch: zero_grad, forward,
cross-entropy on random labels, backward, SGD lr 0.01 momentum 0.9). Each point: the model is built,
--warmup iterations run untimed (cuDNN autotuning is on), then iterations run in rounds of
--sync-every, each ended by torch.cuda.synchronize(), until --min-time seconds and --iterations
iterations have passed. The table gives ms per iteration, the ratio to native and, through Flyt, the
calls per iteration Flyt waited for (round trips) and forwarded.

The measured process is torch_probe.py (beside flytbench) run by --python, which needs PyTorch with
CUDA and torchvision. It always goes through Flyt's driver cut (`flyt run --api driver`: PyTorch's
own CUDA runtime and libraries on Flyt's libcuda.so.1); native runs it with NVIDIA's driver.
Transports: native, shm and tcp (the probe under `flyt run --api driver --server URL`). Unless
--server-shm/--server-tcp name nodes, flytbench starts one private flyt-node for the run.

Examples:
  flytbench torch                                  both points, native, shm, tcp (about a minute each)
  flytbench torch --points resnet50_train_b32 --transports native,shm --json train.json
  flytbench torch --python ~/venv/bin/python --min-time 5
Exit status: 0 all measured, 1 a point or transport failed, 2 nothing could be run (no python, no
PyTorch or torchvision in it, a program missing beside flytbench), 128+N signal N.
See benchmarks/flytbench/README.md for the columns.)";

struct CommandLine {
  std::vector<std::string> sizes, directions{"h2d", "d2h"}, memories{"pinned", "pageable"};
  std::vector<std::string> points = fb::kTorchPoints;
  std::vector<std::string> transports{"native", "shm", "tcp"};
  bool noVerify = false;
};

template <class... Args>
void say(fmt::format_string<Args...> format, Args&&... args) {
  fmt::print(stderr, "flytbench: {}\n", fmt::format(format, std::forward<Args>(args)...));
}

// The options every command has; torch has no --api (it always takes the driver cut).
void addCommonOptions(CLI::App& command, fb::Options& options, CommandLine& cli, fb::Test test) {
  command.add_option("--transports", cli.transports, "comma-separated: native, shm, tcp")
      ->type_name("LIST")
      ->delimiter(',')
      ->check(CLI::IsMember({"native", "shm", "tcp"}))
      ->capture_default_str();
  command.add_option("--clients", options.clients, "probe processes per transport, released together")
      ->type_name("N")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  command
      .add_option("--min-time", options.minTime,
                  test == fb::Test::kTorch ? "seconds each point is measured, at least"
                                           : "seconds each point is measured, at least (3 calls at least)")
      ->type_name("SEC")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  command
      .add_option("--server-shm", options.serverShm,
                  "node for shm instead of the private one, e.g. shm://flyt")
      ->type_name("URL");
  command
      .add_option("--server-tcp", options.serverTcp,
                  "node for tcp instead of the private one, e.g. tcp://gpu1:7070")
      ->type_name("URL");
  if (test != fb::Test::kTorch) {
    command
        .add_option("--api", options.api,
                    "the cut shm and tcp go through: runtime (Flyt's libcudart.so.13) or driver (NVIDIA's "
                    "runtime on Flyt's libcuda.so.1)")
        ->type_name("CUT")
        ->check(CLI::IsMember({"runtime", "driver"}))
        ->capture_default_str();
  }
  command
      .add_option("--executor", options.executor,
                  "the private node's: auto (the GPU), cuda, standin (the GPU stand-in, a test double)")
      ->type_name("KIND")
      ->check(CLI::IsMember({"auto", "cuda", "standin"}))
      ->capture_default_str();
  command
      .add_option("--json", options.jsonPath, "write every result as JSON to FILE ('-': stdout, no table)")
      ->type_name("FILE");
  command
      .add_option("--csv", options.csvPath,
                  "write one CSV row per point and transport to FILE ('-': stdout, no table)")
      ->type_name("FILE");
}

// Checks what CLI11 cannot and fills in the defaults that depend on other options.
std::expected<fb::Options, std::string> finishOptions(fb::Options options, const CommandLine& cli) {
  std::set<std::string> wanted(cli.transports.begin(), cli.transports.end());
  options.transports.clear();
  for (const char* t : {"native", "shm", "tcp"}) {  // one order, whatever the command line's
    if (wanted.contains(t)) options.transports.emplace_back(t);
  }
  if (options.jsonPath == "-" && options.csvPath == "-")
    return std::unexpected("--json - and --csv - cannot both use stdout");
  options.verify = options.test == fb::Test::kMemcpy && !cli.noVerify;  // latency has nothing to verify
  if (options.test == fb::Test::kLatency) return options;
  if (options.test == fb::Test::kTorch) {
    options.api = "driver";
    for (const auto& point : fb::kTorchPoints) {  // one order, whatever the command line's
      if (std::ranges::find(cli.points, point) != cli.points.end()) options.points.push_back(point);
    }
    if (options.points.empty())
      return std::unexpected("--points is empty: name resnet50_infer_b32, resnet50_train_b32 or both");
    return options;
  }
  std::vector<std::string> sizes = cli.sizes;
  if (sizes.empty()) {
    sizes = options.clients > 1 ? std::vector<std::string>{"64M", "256M"}
                                : std::vector<std::string>{"4K", "64K", "1M", "16M", "64M", "256M", "1G"};
  }
  for (const auto& text : sizes) {
    auto bytes = fb::parseSize(text);
    if (!bytes) return std::unexpected(bytes.error());
    if (std::ranges::find(options.sizes, *bytes) == options.sizes.end()) options.sizes.push_back(*bytes);
  }
  std::ranges::sort(options.sizes);
  for (const char* d : {"h2d", "d2h", "d2d"}) {
    if (std::ranges::find(cli.directions, d) != cli.directions.end()) options.directions.emplace_back(d);
  }
  for (const char* m : {"pinned", "pageable"}) {
    if (std::ranges::find(cli.memories, m) != cli.memories.end()) options.memories.emplace_back(m);
  }
  if (options.memories.empty() && options.directions != std::vector<std::string>{"d2d"}) {
    return std::unexpected("--memory is empty: name pinned, pageable or both");
  }
  return options;
}

std::string now() {
  const std::time_t t = std::time(nullptr);
  std::tm local{};
  ::localtime_r(&t, &local);
  char text[64];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S%z", &local);
  return text;
}

bool writeOutput(const std::string& path, const std::string& text) {
  if (path.empty()) return true;
  if (path == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return std::fflush(stdout) == 0;
  }
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << text;
  file.close();
  if (!file) say("cannot write {}", path);
  return bool(file);
}

// What a run needs on disk beside flytbench; the problem otherwise.
std::optional<std::string> checkInstallation(const fb::Options& options, const fs::path& bin,
                                             const fs::path& runtime) {
  const char* probe = options.test == fb::Test::kTorch ? fb::kTorchProbe : "flytbench-probe";
  if (!fs::exists(bin / probe)) return fmt::format("{} is not beside flytbench in {}", probe, bin.string());
  const bool flyt = std::ranges::any_of(options.transports, [](auto& t) { return t != "native"; });
  if (flyt && !fs::exists(bin / "flyt"))
    return fmt::format("flyt is not beside flytbench in {}", bin.string());
  if (flyt && !fs::exists(runtime)) {
    return fmt::format("Flyt's {} is not at {} (the layout is <prefix>/bin, <prefix>/lib and <prefix>/lib/driver)",
                       runtime.filename().string(), runtime.string());
  }
  return std::nullopt;
}

void measureRawSockets(fb::RunResult& run, fb::Progress& progress) {
  for (auto bytes : run.options.sizes) {
    if (fb::interrupted()) return;
    auto result = fb::measureRawSocket(bytes, run.options.clients, run.options.minTime);
    progress.step(fmt::format("raw socket {}", fb::sizeLabel(bytes)),
                  result.error.empty() ? fmt::format("{} GB/s", fb::formatValue(result.gbps))
                                       : "error: " + result.error);
    run.rawSocket[bytes] = std::move(result);
  }
}

// A transport that was not run, every point marked failed with `why`.
fb::TransportRun notRun(const std::string& transport, const std::string& server, std::size_t points,
                        const std::string& why) {
  fb::TransportRun run{.name = transport, .server = server, .status = fb::Status::kFailed, .note = why};
  run.measurements.assign(points,
                          fb::Measurement{.status = fb::Status::kFailed, .note = "not measured: " + why});
  return run;
}

// Every transport in turn (the raw socket baseline just before tcp), into `run`.
void measureAll(fb::RunResult& run, const fb::PrivateNode* node, const fb::SweepContext& context) {
  const fb::Options& options = run.options;
  for (const auto& transport : options.transports) {
    std::string server;
    if (transport == "shm") server = !options.serverShm.empty() ? options.serverShm : node->endpoint("shm");
    if (transport == "tcp") server = !options.serverTcp.empty() ? options.serverTcp : node->endpoint("tcp");
    if (transport == "tcp" && options.test == fb::Test::kMemcpy) measureRawSockets(run, context.progress);
    if (fb::interrupted()) {
      run.transports.push_back(notRun(transport, server, run.points.size(), "interrupted"));
    } else if (transport != "native" && server.empty()) {
      const std::string why = fmt::format("the private node serves no {} endpoint", transport);
      context.progress.note(fmt::format("{}: {}", transport, why));
      context.progress.skip(int(run.points.size()));
      run.transports.push_back(notRun(transport, server, run.points.size(), why));
    } else {
      run.transports.push_back(fb::runTransport(transport, server, run.points, context));
    }
    const auto& last = run.transports.back();
    if (run.device.empty() && last.status == fb::Status::kOk) run.device = last.device;
  }
}

// The table on stdout unless JSON or CSV goes there; the files asked for. False if one failed.
bool writeOutputs(const fb::RunResult& run) {
  const fb::Options& options = run.options;
  bool written = true;
  if (options.jsonPath != "-" && options.csvPath != "-") written = writeOutput("-", fb::renderTable(run));
  written = writeOutput(options.jsonPath, fb::renderJson(run)) && written;
  written = writeOutput(options.csvPath, fb::renderCsv(run)) && written;
  if (!options.plotPath.empty()) written = writeOutput(options.plotPath, fb::renderSvg(run)) && written;
  return written;
}

// For torch: finds --python and checks that it has PyTorch and torchvision (a line on stderr says
// which); the problem otherwise.
std::optional<std::string> checkPython(fb::Options& options, const fs::path& bin) {
  const auto python = fb::tryFindProgram(options.python);
  if (!python) {
    return fmt::format("{} is not an executable program{} (name the python with PyTorch with --python PATH)",
                       options.python, options.python.find('/') == std::string::npos ? " on PATH" : "");
  }
  options.python = python->string();
  auto versions = fb::checkTorchProbe(options, bin);
  if (!versions) {
    return fmt::format("flytbench torch needs PyTorch and torchvision in the python it runs: {}",
                       versions.error());
  }
  say("{}: {}", options.python, *versions);
  return std::nullopt;
}

int benchmark(fb::Options options) {
  fb::RunResult run{.options = options, .date = now()};
  run.points = fb::pointsOf(options);
  const fs::path bin = fb::selfDirectory();
  std::error_code ec;
  const fs::path runtime =
      fs::weakly_canonical(options.api == "driver" ? bin / ".." / "lib" / "driver" / "libcuda.so.1"
                                                   : bin / ".." / "lib" / "libcudart.so.13",
                           ec);
  run.flytRuntime = runtime.string();
  if (auto problem = checkInstallation(options, bin, runtime)) {
    say("{}", *problem);
    return kExitSetup;
  }
  fb::installInterruptHandlers();
  if (options.test == fb::Test::kTorch) {
    if (auto problem = checkPython(options, bin)) {
      say("{}", *problem);
      return fb::interrupted() ? 128 + fb::interruptSignal() : kExitSetup;
    }
    run.options = options;
  }
  const auto has = [&](const char* t) {
    return std::ranges::find(options.transports, t) != options.transports.end();
  };
  const bool needNode =
      (has("shm") && options.serverShm.empty()) || (has("tcp") && options.serverTcp.empty());
  if (needNode && options.executor != "standin" && !fb::gpuPresent()) {
    say("no GPU on this host (the CUDA driver libcuda.so.1 did not load or sees no device), so the "
        "private flyt-node for shm/tcp has nothing to serve with{}. Name nodes with "
        "--server-shm/--server-tcp, "
        "measure --transports native only, or check the path on the GPU stand-in (a test double) with "
        "--executor standin",
        options.executor == "cuda" ? " (--executor cuda)" : "");
    return kExitSetup;
  }
  std::optional<fb::PrivateNode> node;
  if (needNode) {
    auto started = fb::PrivateNode::start(bin / "flyt-node", options.executor);
    if (!started) {
      say("{}", started.error());
      return fb::interrupted() ? 128 + fb::interruptSignal() : kExitSetup;
    }
    node.emplace(std::move(*started));
    run.nodeEndpoints = node->endpoints();
  }
  const std::size_t rawSteps = has("tcp") && options.test == fb::Test::kMemcpy ? options.sizes.size() : 0;
  fb::Progress progress(int(run.points.size() * options.transports.size() + rawSteps));
  measureAll(run, node ? &*node : nullptr, fb::SweepContext{options, bin, runtime, progress});
  progress.finish();
  run.interrupted = fb::interrupted();
  std::string nodeLog;
  if (node) {
    node->stop();
    if (run.anyFailed() && !run.interrupted) nodeLog = node->logTail(20);
  }
  const bool written = writeOutputs(run);
  if (!nodeLog.empty()) say("the private flyt-node's log (its workers' included) ended with:\n{}", nodeLog);
  if (run.interrupted) return 128 + fb::interruptSignal();
  return run.anyFailed() || !written ? kExitFailed : 0;
}

CLI::App* addTorchCommand(CLI::App& app, fb::Options& options, CommandLine& cli) {
  auto* torch = app.add_subcommand(
      "torch",
      "PyTorch ResNet-50 inference and training step, time per iteration, always through Flyt's driver cut "
      "(needs PyTorch and torchvision in --python)");
  options.minTime = 15;  // two points and PyTorch's start: about a minute per transport
  torch->add_option("--points", cli.points, "comma-separated: resnet50_infer_b32, resnet50_train_b32")
      ->type_name("LIST")
      ->delimiter(',')
      ->check(CLI::IsMember(fb::kTorchPoints))
      ->capture_default_str();
  torch->add_option("--iterations", options.iterations, "iterations measured per point, at least")
      ->type_name("N")
      ->check(CLI::Range(1, 1000000))
      ->capture_default_str();
  torch
      ->add_option("--sync-every", options.syncEvery,
                   "iterations queued between two torch.cuda.synchronize() (1: every iteration is waited for)")
      ->type_name("N")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  torch->add_option("--warmup", options.warmup, "untimed iterations per point before it is measured")
      ->type_name("N")
      ->check(CLI::Range(0, 10000))
      ->capture_default_str();
  options.python = "python3";
  torch->add_option("--python", options.python, "the Python interpreter with PyTorch and torchvision")
      ->type_name("PATH")
      ->capture_default_str();
  addCommonOptions(*torch, options, cli, fb::Test::kTorch);
  torch->footer(kTorchFooter);
  return torch;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "flytbench: memcpy throughput, call latency and PyTorch ResNet-50 iteration times through Flyt (shm, "
      "tcp) against native CUDA, measured in one run.",
      "flytbench"};
  app.require_subcommand(1);
  app.footer(kFooter);
  fb::Options memcpyOptions, latencyOptions, torchOptions;
  CommandLine memcpyCli, latencyCli, torchCli;

  auto* memcpy =
      app.add_subcommand("memcpy", "cudaMemcpy throughput per size, direction and host memory kind");
  memcpy
      ->add_option("--sizes", memcpyCli.sizes,
                   "copy sizes, suffixes K/M/G are powers of 1024 (default 4K,64K,1M,16M,64M,256M,1G; with "
                   "--clients > 1: 64M,256M)")
      ->type_name("LIST")
      ->delimiter(',');
  memcpy->add_option("--directions", memcpyCli.directions, "comma-separated: h2d, d2h, d2d")
      ->type_name("LIST")
      ->delimiter(',')
      ->check(CLI::IsMember({"h2d", "d2h", "d2d"}))
      ->capture_default_str();
  memcpy
      ->add_option("--memory", memcpyCli.memories, "host memory: pinned (cudaMallocHost), pageable (malloc)")
      ->type_name("LIST")
      ->delimiter(',')
      ->check(CLI::IsMember({"pinned", "pageable"}))
      ->capture_default_str();
  memcpy->add_option("--plot", memcpyOptions.plotPath, "write an SVG plot of GB/s against size to FILE")
      ->type_name("FILE.svg");
  memcpy->add_flag("--no-verify", memcpyCli.noVerify, "skip the check that bytes survive a round trip");
  addCommonOptions(*memcpy, memcpyOptions, memcpyCli, fb::Test::kMemcpy);
  memcpy->footer(kFooter);

  auto* latency = app.add_subcommand(
      "latency", "time per call: d2h_8b, stream_query, launch_enqueue, launch_sync, malloc_free_1mib");
  addCommonOptions(*latency, latencyOptions, latencyCli, fb::Test::kLatency);
  latency->footer(kFooter);

  auto* torch = addTorchCommand(app, torchOptions, torchCli);

  CLI11_PARSE(app, argc, argv);
  const bool isMemcpy = memcpy->parsed();
  const bool isTorch = torch->parsed();
  fb::Options options = isMemcpy ? memcpyOptions : isTorch ? torchOptions : latencyOptions;
  options.test = isMemcpy ? fb::Test::kMemcpy : isTorch ? fb::Test::kTorch : fb::Test::kLatency;
  auto finished = finishOptions(options, isMemcpy ? memcpyCli : isTorch ? torchCli : latencyCli);
  if (!finished) {
    say("{}", finished.error());
    return kExitSetup;
  }
  return benchmark(*finished);
}
