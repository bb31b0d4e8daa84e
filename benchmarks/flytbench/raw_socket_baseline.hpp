// The raw loopback TCP baseline of `flytbench memcpy`: what a plain socket pair on this host moves
// in the same run, against which Flyt's TCP path is judged (target: at least 0.7x).
#pragma once

#include <cstdint>

#include "model.hpp"

namespace flyt::flytbench {

// `pairs` connected loopback socket pairs (one per client), each with a sender and a receiver
// thread. Like a synchronous cudaMemcpy, every transfer is a round trip: the sender writes `bytes`,
// the receiver reads them all and answers one byte; otherwise small sizes would compare a pipelined
// stream with Flyt's request/reply. Repeated until `minTime` seconds (at least 3 transfers) after
// one untimed warm-up; throughput aggregated as for probes: all bytes / (last end - first start).
[[nodiscard]] RawSocketResult measureRawSocket(std::uint64_t bytes, int pairs, double minTime);

}  // namespace flyt::flytbench
