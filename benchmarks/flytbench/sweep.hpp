// Running the points of a run through one transport: starting the probes (natively or under
// `flyt run`), the ready/go protocol, aggregation of N clients, progress lines.
#pragma once

#include <cstdio>
#include <expected>
#include <filesystem>
#include <string>
#include <vector>

#include "model.hpp"

namespace flyt::flytbench {

// Progress on stderr: "flytbench: [5/28] shm h2d pinned 64 MiB  52.1 GB/s". On a terminal the line
// is rewritten in place; otherwise one line per step.
class Progress {
 public:
  explicit Progress(int total);
  ~Progress() { finish(); }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void step(const std::string& what, const std::string& outcome);
  // Counts `count` steps that will not run (a skipped or failed transport).
  void skip(int count);
  // A line that stays (notes, errors), printed above the in-place line.
  void note(const std::string& text);
  // Ends the in-place line.
  void finish();

 private:
  int m_total;
  int m_done = 0;
  bool m_tty;
  bool m_open = false;  // an in-place line is on the terminal
};

struct SweepContext {
  const Options& options;
  std::filesystem::path binDir;       // flyt, flytbench-probe, torch_probe.py
  std::filesystem::path flytRuntime;  // Flyt's libcudart.so.13, or with the driver cut its libcuda.so.1
  Progress& progress;
};

// Runs every point through `transport` ("native", or "shm"/"tcp" through `server`). Never throws;
// failures are in the returned run (its status, its measurements' status and notes).
[[nodiscard]] TransportRun runTransport(const std::string& transport, const std::string& server,
                                        const std::vector<Point>& points, const SweepContext& context);

// The PyTorch probe beside flytbench.
inline constexpr const char* kTorchProbe = "torch_probe.py";

// Runs `options.python torch_probe.py check` (natively, no GPU needed): "PyTorch 2.5.1, torchvision
// 0.20.1 (Python 3.11.7)", or why this python cannot run the probe (not executable, no torch or
// torchvision). Blocks for as long as importing torch takes, at most two minutes.
[[nodiscard]] std::expected<std::string, std::string> checkTorchProbe(const Options& options,
                                                                      const std::filesystem::path& binDir);

// LD_LIBRARY_PATH without the directories whose libcudart.so.13 is `flytRuntime`.
[[nodiscard]] std::string libraryPathWithout(const std::string& libraryPath,
                                             const std::filesystem::path& flytRuntime);

// True when `cudart` is Flyt's runtime: `flytRuntime` itself, a copy, or another build of it.
[[nodiscard]] bool isFlytRuntime(const std::filesystem::path& cudart,
                                 const std::filesystem::path& flytRuntime);

}  // namespace flyt::flytbench
