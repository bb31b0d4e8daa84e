// memcpy on several threads, for filling and draining staging slots: one thread moves about
// 10-12 GB/s, a little more than half of what a PCIe 5 DMA engine takes, so large pageable copies
// split each slot between the caller and a few helper threads.
#pragma once

#include <cstddef>

namespace flyt::interpose {

// Copies `bytes` from `from` to `to` (not overlapping) using up to `threads` threads, the caller
// being one of them. Small copies stay on the caller. Thread-safe; helper threads start on first
// use and live as long as the process.
void parallelCopy(void* to, const void* from, std::size_t bytes, unsigned threads) noexcept;

}  // namespace flyt::interpose
