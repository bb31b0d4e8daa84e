// Captures what the worker process writes to its stdout (device printf: NVIDIA's runtime prints the
// device's printf buffer with stdio when the application synchronises) so that it can travel to the
// application with the next reply, whichever host the application runs on.
//
// A reader thread empties the pipe that replaces fd 1 (so a large burst never blocks the runtime).
// drain() flushes stdio, writes a marker through the pipe and waits until the reader has seen it:
// everything printed before the call is then in the returned bytes, in order.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "flyt/transport/error.hpp"

namespace flyt::backend {

class OutputCapture {
 public:
  // Replaces this process's fd 1 with a pipe. One per process.
  [[nodiscard]] static transport::Result<std::unique_ptr<OutputCapture>> start();
  ~OutputCapture();
  OutputCapture(const OutputCapture&) = delete;
  OutputCapture& operator=(const OutputCapture&) = delete;

  // What was written to stdout since the last drain(), at most `maxBytes` of it (the rest stays for
  // the next drain, in order). Waits at most about a second for the reader (it returns what it has if
  // the reader is stuck); returns at once when nothing was written.
  [[nodiscard]] std::string drain(std::size_t maxBytes);

  // Bytes captured and not yet drained.
  [[nodiscard]] std::size_t undelivered();

 private:
  OutputCapture(int readFd, int writeFd);
  void readLoop();

  int m_readFd;
  int m_writeFd;  // the pipe's write end, also installed as fd 1
  std::mutex m_mutex;
  std::condition_variable m_markerSeen;
  std::string m_pending;          // guarded by m_mutex
  std::size_t m_markersSeen = 0;  // guarded by m_mutex
  std::size_t m_markersSent = 0;  // drain() only
  std::atomic<bool> m_busy{false};  // the reader holds bytes it took from the pipe
  std::thread m_reader;
};

}  // namespace flyt::backend
