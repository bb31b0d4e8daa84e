#include "output_capture.hpp"

#include <poll.h>
#include <sys/ioctl.h>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string_view>

#include "flyt/transport/sys.hpp"

namespace flyt::backend {
namespace {

// Written through the pipe by drain(); device printf output does not contain NUL-ESC sequences.
constexpr std::string_view kMarker{"\0\x1b" "flyt-drain" "\x1b\0", 14};

}  // namespace

transport::Result<std::unique_ptr<OutputCapture>> OutputCapture::start() {
  int fds[2];
  auto piped = transport::sys("pipe2", [&] { return ::pipe2(fds, O_CLOEXEC); });
  if (!piped) return std::unexpected(piped.error());
  std::fflush(stdout);
  auto replaced = transport::sys("dup2", [&] { return ::dup2(fds[1], STDOUT_FILENO); });
  if (!replaced) {
    ::close(fds[0]);
    ::close(fds[1]);
    return std::unexpected(replaced.error());
  }
  return std::unique_ptr<OutputCapture>(new OutputCapture(fds[0], fds[1]));
}

OutputCapture::OutputCapture(int readFd, int writeFd)
    : m_readFd(readFd), m_writeFd(writeFd), m_reader([this] { readLoop(); }) {}

OutputCapture::~OutputCapture() {
  std::fflush(stdout);
  // Point fd 1 at /dev/null and close our write end: the reader then sees end-of-file.
  const int devNull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (devNull >= 0) {
    ::dup2(devNull, STDOUT_FILENO);
    ::close(devNull);
  }
  ::close(m_writeFd);
  m_reader.join();
  ::close(m_readFd);
}

void OutputCapture::readLoop() {
  char buffer[65536];
  std::string carry;  // a tail that may be the start of a marker
  for (;;) {
    pollfd readable{m_readFd, POLLIN, 0};
    if (::poll(&readable, 1, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    // Busy from before the bytes leave the pipe until they are in m_pending (drain's fast check).
    m_busy.store(true);
    const ssize_t n = ::read(m_readFd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    carry.append(buffer, std::size_t(n));
    std::size_t markers = 0;
    for (auto at = carry.find(kMarker); at != std::string::npos; at = carry.find(kMarker)) {
      carry.erase(at, kMarker.size());
      ++markers;
    }
    // Keep back a partial marker at the end, if any.
    std::size_t keep = 0;
    for (std::size_t len = std::min(carry.size(), kMarker.size() - 1); len > 0; --len) {
      if (std::string_view(carry).substr(carry.size() - len) == kMarker.substr(0, len)) {
        keep = len;
        break;
      }
    }
    std::lock_guard lock(m_mutex);
    m_pending.append(carry, 0, carry.size() - keep);
    carry.erase(0, carry.size() - keep);
    m_markersSeen += markers;
    if (carry.empty()) m_busy.store(false);  // a kept partial marker is output not yet delivered
    if (markers > 0) m_markerSeen.notify_all();
  }
}

std::string OutputCapture::drain(std::size_t maxBytes) {
  std::fflush(stdout);
  // Almost every reply has nothing to carry: when the pipe is empty and the reader holds nothing in
  // hand, everything printed so far is already in m_pending and the marker round trip (a thread
  // wake-up, tens of microseconds) is skipped. The pipe is checked before the flag: bytes the reader
  // takes out after the check were taken with the flag already set.
  int queued = 0;
  const bool quiet = ::ioctl(m_readFd, FIONREAD, &queued) == 0 && queued == 0 && !m_busy.load();
  if (!quiet && ::write(STDOUT_FILENO, kMarker.data(), kMarker.size()) == ssize_t(kMarker.size())) {
    ++m_markersSent;
  }
  std::unique_lock lock(m_mutex);
  if (!quiet) {
    m_markerSeen.wait_for(lock, std::chrono::seconds(1), [&] { return m_markersSeen >= m_markersSent; });
  }
  if (m_pending.size() <= maxBytes) {
    std::string out;
    out.swap(m_pending);
    return out;
  }
  std::string out = m_pending.substr(0, maxBytes);
  m_pending.erase(0, maxBytes);
  return out;
}

std::size_t OutputCapture::undelivered() {
  std::lock_guard lock(m_mutex);
  return m_pending.size();
}

}  // namespace flyt::backend
