// What other files of the client ask of the pinned host memory table (host_memory.cpp).
#pragma once

namespace flyt::interpose {

// True when `pointer` lies inside memory of cudaMallocHost/cudaHostAlloc or a cudaHostRegister'ed
// range. Any thread.
[[nodiscard]] bool isPinnedHostMemory(const void* pointer) noexcept;

}  // namespace flyt::interpose
