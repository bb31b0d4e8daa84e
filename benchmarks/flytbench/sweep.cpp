#include "sweep.hpp"

#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <limits>

#include "probe_group.hpp"

namespace flyt::flytbench {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// How long a probe may take to answer: warm-up, verification and a measurement of a point, or its
// start. Generous; a probe past it is killed and reported. PyTorch takes longer: importing torch,
// building a model, and through Flyt loading cuDNN's and cuBLAS's kernels and cuDNN's autotuning.
constexpr auto kAnswerBound = 60s;
constexpr auto kTorchAnswerBound = 300s;
constexpr auto kExitBound = 10s;
constexpr auto kTorchExitBound = 30s;
constexpr auto kQuitGrace = 3s;  // for a probe told to quit, beyond the point it is measuring

ProbeGroup::Deadline answerDeadline(const Options& options) {
  return std::chrono::steady_clock::now() + (options.test == Test::kTorch ? kTorchAnswerBound : kAnswerBound) +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
             std::chrono::duration<double>(options.minTime));
}

ProbeGroup::Deadline exitDeadline(const Options& options) {
  return std::chrono::steady_clock::now() + (options.test == Test::kTorch ? kTorchExitBound : kExitBound);
}

std::string joined(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ",") + item;
  return out;
}

std::vector<std::string> probeArguments(const Options& options) {
  std::vector<std::string> args;
  const std::string minTime = fmt::format("{}", options.minTime);
  if (options.test == Test::kLatency) return {"latency", "--min-time", minTime};
  if (options.test == Test::kTorch) {
    return {"run",
            "--points",
            joined(options.points),
            "--min-time",
            minTime,
            "--iterations",
            std::to_string(options.iterations),
            "--sync-every",
            std::to_string(options.syncEvery),
            "--warmup",
            std::to_string(options.warmup)};
  }
  std::vector<std::string> sizes;
  for (auto bytes : options.sizes) sizes.push_back(std::to_string(bytes));
  args = {"memcpy",
          "--sizes",
          joined(sizes),
          "--directions",
          joined(options.directions),
          "--memory",
          joined(options.memories),
          "--min-time",
          minTime};
  if (options.verify) args.emplace_back("--verify");
  return args;
}

std::vector<std::string> probeCommand(const std::string& server, const SweepContext& context) {
  std::vector<std::string> command;
  if (!server.empty()) {
    command = {(context.binDir / "flyt").string(), "run", "--api", context.options.api, "--server", server, "--"};
  }
  if (context.options.test == Test::kTorch) {
    command.push_back(context.options.python);
    command.push_back((context.binDir / kTorchProbe).string());
  } else {
    command.push_back((context.binDir / "flytbench-probe").string());
  }
  const auto args = probeArguments(context.options);
  command.insert(command.end(), args.begin(), args.end());
  return command;
}

// Natively, the probe must load NVIDIA's runtime: nothing may put Flyt's in front of it.
std::vector<std::string> nativeEnvironment(const fs::path& flytRuntime) {
  const char* path = std::getenv("LD_LIBRARY_PATH");
  const std::string kept = libraryPathWithout(path != nullptr ? path : "", flytRuntime);
  if (kept.empty()) return environmentWith({"LD_PRELOAD", "FLYT_SERVER", "LD_LIBRARY_PATH"}, {});
  return environmentWith({"LD_PRELOAD", "FLYT_SERVER"}, {"LD_LIBRARY_PATH=" + kept});
}

// Whether the message is `kind` for `point`; the problem otherwise.
std::optional<std::string> mismatch(const FlatJson& message, const char* kind, const Point& point) {
  const auto got = message.string("kind").value_or("?");
  if (got == "error") {
    return fmt::format("{}: {}", message.string("what").value_or("?"), message.string("error").value_or("?"));
  }
  if (got != kind) return fmt::format("expected a '{}' line, got {}", kind, message.dump());
  const bool same = point.name.empty() ? message.string("direction") == point.direction &&
                                             message.string("memory") == point.memory &&
                                             message.integer("bytes") == std::int64_t(point.bytes)
                                       : message.string("point") == point.name;
  if (!same) return fmt::format("the probe is not at {}: {}", pointLabel(point), message.dump());
  return std::nullopt;
}

Measurement aggregate(const Point& point, std::vector<FlatJson> results) {
  Measurement m{.status = Status::kOk};
  std::int64_t first = std::numeric_limits<std::int64_t>::max();
  std::int64_t last = std::numeric_limits<std::int64_t>::min();
  double moved = 0, us = 0;
  double counts[3] = {0, 0, 0};  // calls, waited, messages per iteration, summed over clients
  bool counted = true;           // every client reported them
  bool allVerified = true, anyUnverified = false;
  for (const auto& r : results) {
    const auto iterations = r.integer("iterations").value_or(0);
    first = std::min(first, r.integer("start_ns").value_or(0));
    last = std::max(last, r.integer("end_ns").value_or(0));
    m.iterations += iterations;
    moved += double(point.bytes) * double(iterations);
    us += r.number("us").value_or(0);
    int n = 0;
    for (const char* key : {"calls", "waited", "messages"}) {
      const auto value = r.number(key);
      counted = counted && value && *value >= 0;
      counts[n++] += value.value_or(0);
    }
    const auto verified = r.boolean("verified");
    if (!verified) anyUnverified = true;
    if (verified == false) allVerified = false;
  }
  m.seconds = double(last - first) / 1e9;
  if (point.name.empty() && m.seconds > 0) m.gbps = moved / m.seconds / 1e9;
  m.us = us / double(results.size());
  if (counted && !results.empty()) {
    const double clients = double(results.size());
    m.calls = counts[0] / clients;
    m.waited = counts[1] / clients;
    m.messages = counts[2] / clients;
  }
  if (!allVerified) {
    m.verified = false;
    m.status = Status::kFailed;
    m.note = "data mismatch: the bytes read back differ from those written";
  } else if (!anyUnverified) {
    m.verified = true;
  }
  m.clients = std::move(results);
  return m;
}

std::expected<Measurement, std::string> measurePoint(ProbeGroup& group, const Point& point,
                                                     const Options& options) {
  auto ready = group.nextFromEach(answerDeadline(options));
  if (!ready) return std::unexpected(ready.error());
  for (const auto& message : *ready) {
    if (auto problem = mismatch(message, "ready", point)) return std::unexpected(*problem);
  }
  if (auto sent = group.sendAll("go"); !sent) return std::unexpected(sent.error());
  auto results = group.nextFromEach(answerDeadline(options));
  if (!results) return std::unexpected(results.error());
  for (const auto& message : *results) {
    if (auto problem = mismatch(message, "result", point)) return std::unexpected(*problem);
  }
  return aggregate(point, std::move(*results));
}

// Checks the probes' first lines; the run's status says whether the sweep goes on.
void takeInfos(TransportRun& run, std::vector<FlatJson> infos, const SweepContext& context) {
  for (const auto& info : infos) {
    const auto kind = info.string("kind").value_or("?");
    if (kind == "nodevice") {
      const auto error = info.string("error").value_or("?");
      run.status = run.name == "native" ? Status::kSkipped : Status::kFailed;
      const char* who = context.options.test == Test::kTorch ? "PyTorch" : "NVIDIA's runtime";
      run.note = run.name == "native" ? fmt::format("skipped: {} sees no CUDA device ({})", who, error)
                                      : fmt::format("the node's worker reports no CUDA device ({})", error);
    } else if (kind == "error") {
      run.status = Status::kFailed;
      run.note = fmt::format("{}: {}", info.string("what").value_or("?"), info.string("error").value_or("?"));
    } else if (kind != "info") {
      run.status = Status::kFailed;
      run.note = fmt::format("expected an info line, got {}", info.dump());
    }
    if (run.status != Status::kOk) break;
    run.cudart = info.string("cudart").value_or("unknown");
    run.driver = info.string("driver").value_or("unknown");
    run.device = info.string("device").value_or("unknown");
    // What proves the path: Flyt's runtime, or with the driver cut Flyt's driver under NVIDIA's runtime.
    // PyTorch always runs on the driver cut and brings its own runtime: the driver is the proof,
    // natively too.
    const bool torch = context.options.test == Test::kTorch;
    const bool driverCut = context.options.api == "driver";
    const std::string& proof = (driverCut && run.name != "native") || torch ? run.driver : run.cudart;
    const bool flyt = isFlytRuntime(proof, context.flytRuntime);
    if (run.name == "native" && flyt && torch) {
      run.status = Status::kFailed;
      run.note = fmt::format(
          "refused: the native PyTorch probe loaded Flyt's driver ({}), not NVIDIA's. Take Flyt's "
          "lib/driver off LD_LIBRARY_PATH and LD_PRELOAD",
          run.driver);
    } else if (run.name == "native" && flyt) {
      run.status = Status::kFailed;
      run.note = fmt::format(
          "refused: the native probe loaded Flyt's runtime ({}), not NVIDIA's. Put NVIDIA's "
          "libcudart.so.13 on LD_LIBRARY_PATH or in the loader's cache (ldconfig)",
          run.cudart);
    } else if (run.name != "native" && !flyt) {
      run.status = Status::kFailed;
      run.note = fmt::format("under flyt run the probe loaded {}, not Flyt's {} {}", proof,
                             driverCut ? "driver" : "runtime", context.flytRuntime.string());
    }
  }
  run.infos = std::move(infos);
}

void markFrom(TransportRun& run, std::size_t from, Status status, const std::string& note) {
  for (std::size_t i = from; i < run.measurements.size(); ++i) {
    run.measurements[i] = Measurement{.status = status, .note = note};
  }
}

std::string outcomeText(const Measurement& m, const Options& options) {
  if (m.status != Status::kOk) return "error: " + m.note;
  if (options.test == Test::kTorch) return fmt::format("{} ms", formatValue(m.us / 1e3));
  return options.test == Test::kLatency ? fmt::format("{} µs", formatValue(m.us))
                                        : fmt::format("{} GB/s", formatValue(m.gbps));
}

}  // namespace

namespace {

// Starts the probes and takes their info lines; `run`'s status and note say how that went.
std::optional<ProbeGroup> startProbes(TransportRun& run, const SweepContext& context) {
  const auto env = run.name == "native" ? nativeEnvironment(context.flytRuntime) : environmentWith({}, {});
  auto group = ProbeGroup::start(probeCommand(run.server, context), env, context.options.clients);
  if (!group) {
    run.status = Status::kFailed;
    run.note = group.error();
    return std::nullopt;
  }
  auto infos = group->nextFromEach(answerDeadline(context.options));
  if (infos) {
    takeInfos(run, std::move(*infos), context);
    return std::move(*group);
  }
  run.status = Status::kFailed;
  run.note = infos.error();
  if (run.name == "native" && !interrupted() && context.options.test == Test::kTorch) {
    run.note += "\n    (natively the PyTorch probe runs with NVIDIA's driver, libcuda.so.1)";
  } else if (run.name == "native" && !interrupted()) {
    run.note +=
        "\n    (natively the probe needs NVIDIA's libcudart.so.13 on LD_LIBRARY_PATH, outside the "
        "directories of Flyt's, or in the loader's cache)";
  }
  return std::move(*group);
}

}  // namespace

TransportRun runTransport(const std::string& transport, const std::string& server,
                          const std::vector<Point>& points, const SweepContext& context) {
  const Options& options = context.options;
  TransportRun run{.name = transport, .server = server};
  run.measurements.resize(points.size());
  const auto abandon = [&](std::size_t from, Status status, const std::string& note) {
    markFrom(run, from, status, note);
    context.progress.skip(int(points.size() - from));
  };
  const auto quitGrace = kQuitGrace + std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::duration<double>(options.minTime));
  auto group = startProbes(run, context);
  if (run.status != Status::kOk) {
    if (group) group->stop(quitGrace);
    context.progress.note(fmt::format("{}: {}", transport, run.note));
    abandon(0, run.status, run.status == Status::kSkipped ? run.note : "not measured: " + run.note);
    return run;
  }
  for (std::size_t i = 0; i < points.size(); ++i) {
    auto measured = measurePoint(*group, points[i], options);
    run.measurements[i] =
        measured ? std::move(*measured) : Measurement{.status = Status::kFailed, .note = measured.error()};
    context.progress.step(fmt::format("{} {}", transport, pointLabel(points[i])),
                          outcomeText(run.measurements[i], options));
    if (!measured) {
      group->stop(quitGrace);
      abandon(i + 1, Status::kFailed,
              fmt::format("not measured: the {} probes stopped at {}", transport, pointLabel(points[i])));
      return run;
    }
  }
  if (auto done = group->finish(exitDeadline(options)); !done) {
    group->stop(quitGrace);
    run.status = Status::kFailed;
    run.note = done.error();
    context.progress.note(fmt::format("{}: {}", transport, run.note));
  }
  return run;
}

std::expected<std::string, std::string> checkTorchProbe(const Options& options, const fs::path& binDir) {
  const std::vector<std::string> command{options.python, (binDir / kTorchProbe).string(), "check"};
  const std::string what = fmt::format("{} {} check", command[0], command[1]);
  auto group = ProbeGroup::start(command, environmentWith({}, {}), 1);
  if (!group) return std::unexpected(fmt::format("cannot run {}: {}", what, group.error()));
  auto answer = group->nextFromEach(std::chrono::steady_clock::now() + 120s);
  if (!answer) return std::unexpected(fmt::format("{}: {}", what, answer.error()));
  const FlatJson& line = answer->front();
  const auto kind = line.string("kind").value_or("?");
  if (kind == "error") {
    return std::unexpected(fmt::format("{}: {}: {}", options.python, line.string("what").value_or("?"),
                                       line.string("error").value_or("?")));
  }
  if (kind != "check") return std::unexpected(fmt::format("{}: expected a check line, got {}", what, line.dump()));
  if (auto done = group->finish(std::chrono::steady_clock::now() + kExitBound); !done) {
    return std::unexpected(fmt::format("{}: {}", what, done.error()));
  }
  return fmt::format("PyTorch {}, torchvision {} (Python {})", line.string("torch").value_or("?"),
                     line.string("torchvision").value_or("?"), line.string("python").value_or("?"));
}

std::string libraryPathWithout(const std::string& libraryPath, const fs::path& flytRuntime) {
  std::string kept;
  std::size_t start = 0;
  while (start <= libraryPath.size()) {
    const std::size_t end = std::min(libraryPath.find(':', start), libraryPath.size());
    const std::string dir = libraryPath.substr(start, end - start);
    const fs::path candidate = fs::path(dir.empty() ? "." : dir) / "libcudart.so.13";
    std::error_code ec;
    if (!dir.empty() && !(fs::exists(candidate, ec) && isFlytRuntime(candidate, flytRuntime))) {
      kept += (kept.empty() ? "" : ":") + dir;
    }
    start = end + 1;
  }
  return kept;
}

bool isFlytRuntime(const fs::path& cudart, const fs::path& flytRuntime) {
  std::error_code ec;
  if (fs::equivalent(cudart, flytRuntime, ec)) return true;
  // Flyt's runtime exports exactly NVIDIA's symbols; what tells a copy or another build of it apart
  // is the name of the variable it reads its node from, which NVIDIA's library does not contain.
  constexpr std::string_view kMarker = "FLYT_SERVER";
  std::ifstream file(cudart, std::ios::binary);
  std::string window;
  std::vector<char> buffer(1 << 20);
  while (file) {
    file.read(buffer.data(), std::streamsize(buffer.size()));
    window.append(buffer.data(), std::size_t(file.gcount()));
    if (window.find(kMarker) != std::string::npos) return true;
    window.erase(0, window.size() - std::min(window.size(), kMarker.size() - 1));  // a marker across chunks
  }
  return false;
}

// ---- Progress --------------------------------------------------------------------------------

Progress::Progress(int total) : m_total(total), m_tty(::isatty(STDERR_FILENO) != 0) {}

void Progress::step(const std::string& what, const std::string& outcome) {
  ++m_done;
  const std::string line = fmt::format("flytbench: [{}/{}] {}  {}", m_done, m_total, what, outcome);
  if (m_tty) {
    // Cut to one line: an error text may be long (it is in the report in full).
    fmt::print(stderr, "\r\033[K{}", line.substr(0, std::min<std::size_t>(line.find('\n'), 160)));
    m_open = true;
  } else {
    fmt::print(stderr, "{}\n", line);
  }
  std::fflush(stderr);
}

void Progress::skip(int count) { m_done += count; }

void Progress::note(const std::string& text) {
  if (m_open) fmt::print(stderr, "\r\033[K");
  m_open = false;
  fmt::print(stderr, "flytbench: {}\n", text);
  std::fflush(stderr);
}

void Progress::finish() {
  if (m_open) fmt::print(stderr, "\n");
  m_open = false;
}

}  // namespace flyt::flytbench
