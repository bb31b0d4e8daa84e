// Registration of the transport benchmarks (see transport_bench.cpp for the groups).
#pragma once

#include "flyt/transport/error.hpp"

namespace flyt::bench {

// Registers every benchmark with Google Benchmark. Fails when the shared-memory transport cannot be
// set up (no RouDi can be started); TCP and in-process benchmarks need nothing.
[[nodiscard]] transport::Result<void> registerTransportBenchmarks();

}  // namespace flyt::bench
