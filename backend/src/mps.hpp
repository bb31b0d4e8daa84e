// The host's MPS control daemon (nvidia-cuda-mps-control), which enforces SM shares given as
// CUDA_MPS_ACTIVE_THREAD_PERCENTAGE when flyt-node's [node] mps is "auto" (use it when it runs) or
// "manage" (start it with the node, stop it with the node).
//
// The daemon and its clients meet in the pipe directory: $CUDA_MPS_PIPE_DIRECTORY, by default
// /tmp/nvidia-mps; the daemon's control FIFO there is named "control". Workers inherit the node's
// environment, so they find the same daemon.
#pragma once

#include <chrono>
#include <string>

#include "flyt/transport/error.hpp"

namespace flyt::backend {

// $CUDA_MPS_PIPE_DIRECTORY, or /tmp/nvidia-mps when it is unset or empty.
[[nodiscard]] std::string mpsPipeDirectory();

// True when <pipe directory>/control exists and is a FIFO or a socket: an MPS control daemon serves this host
// (for this environment's pipe directory). A stale FIFO of a daemon that died also counts; the
// workers' context creation then fails and says so.
[[nodiscard]] bool mpsControlRunning();

// Runs `nvidia-cuda-mps-control -d` (found on PATH) and waits, up to `wait`, until its control FIFO
// exists. kUnavailable when the program is missing, fails, or no FIFO appears in time.
[[nodiscard]] transport::Result<void> startMpsDaemon(std::chrono::milliseconds wait = std::chrono::seconds(10));

// Writes "quit" to `nvidia-cuda-mps-control`'s stdin and waits, up to `wait`, for it to exit.
[[nodiscard]] transport::Result<void> stopMpsDaemon(std::chrono::milliseconds wait = std::chrono::seconds(10));

}  // namespace flyt::backend
