// `flytbench memcpy --plot FILE.svg`: a standalone SVG (no scripts, no external resources) of
// throughput against copy size. One panel per (direction, memory); x is the size on a log2 axis,
// y GB/s on a linear axis from 0; one polyline with markers per transport (and the raw socket
// baseline, dashed, where tcp ran). Each series is a <polyline class="series" data-transport=NAME>
// inside a <g class="panel" data-direction=D data-memory=M>, so that scripts can check the plot.
#pragma once

#include <string>

#include "model.hpp"

namespace flyt::flytbench {

[[nodiscard]] std::string renderSvg(const RunResult& run);

}  // namespace flyt::flytbench
