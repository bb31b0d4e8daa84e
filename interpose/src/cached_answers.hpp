// Answers the client keeps for the life of the session instead of asking again: the "cached" calls'
// results (forward.hpp) and the device properties (device_properties.cpp). cudaDeviceReset drops
// them (device_reset.cpp). Both functions may be called from any thread.
#pragma once

namespace flyt::interpose {

void forgetCachedResults() noexcept;
void forgetDeviceProperties() noexcept;

}  // namespace flyt::interpose
