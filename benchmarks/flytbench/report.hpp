// The outputs of a run: the table for people, JSON and CSV for programs. The SVG plot is in
// svg_plot.hpp. All take a finished (or interrupted) RunResult; none fails.
#pragma once

#include <string>

#include "model.hpp"

namespace flyt::flytbench {

// Header lines (device, runtimes, node, date), one row per point with every transport's result and
// its ratio to native (and, for tcp, to the raw socket), then the notes the cells refer to.
[[nodiscard]] std::string renderTable(const RunResult& run);

// One document: the run's options, the transports with their probes' info lines, the raw socket
// results, and per (point, transport) the aggregate and every client's result line.
[[nodiscard]] std::string renderJson(const RunResult& run);

// A header and one row per (point, transport), skipped and failed ones included.
[[nodiscard]] std::string renderCsv(const RunResult& run);

// Ratios a table shows, nullopt where one side is missing: transport / native (throughput, or time
// per call for latency) and tcp / raw socket.
[[nodiscard]] std::optional<double> ratioToNative(const RunResult& run, const std::string& transport,
                                                  std::size_t point);
[[nodiscard]] std::optional<double> ratioToRawSocket(const RunResult& run, const std::string& transport,
                                                     std::size_t point);

}  // namespace flyt::flytbench
