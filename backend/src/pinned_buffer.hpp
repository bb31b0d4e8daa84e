// A reusable page-locked host buffer of the worker's (TCP payloads in, device-to-host data out):
// copies from and to it are single DMAs. Grows on demand; registration failing (a pinned-memory
// limit) leaves an ordinary buffer, slower but correct. The runtime's dispatcher and the driver
// session each register it with their own API (`Register`/`Unregister`).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <span>

#include "flyt/transport/log.hpp"

namespace flyt::backend {

class PinnedBuffer {
 public:
  using Register = std::function<bool(void*, std::size_t)>;  // true: page-locked now
  using Unregister = std::function<void(void*)>;

  PinnedBuffer(Register registerMemory, Unregister unregisterMemory, std::uint64_t sessionId)
      : m_register(std::move(registerMemory)), m_unregister(std::move(unregisterMemory)), m_sessionId(sessionId) {}
  ~PinnedBuffer() { release(); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;

  // `bytes` of the buffer; empty when no memory could be had. Invalidates earlier spans.
  std::span<std::byte> get(std::size_t bytes) {
    if (bytes > m_bytes) {
      release();
      const std::size_t size = (bytes + 4095) / 4096 * 4096;
      m_data = static_cast<std::byte*>(std::aligned_alloc(4096, size));
      if (m_data == nullptr) return {};
      m_bytes = size;
      m_registered = m_register(m_data, size);
      if (!m_registered) {
        flyt::logger("worker").warn("session {:016x}: a {}-byte staging buffer is not page-locked", m_sessionId, size);
      }
    }
    return {m_data, bytes};
  }

  // Gives the memory back (unregistering it) while whatever registered it still can.
  void release() {
    if (m_data == nullptr) return;
    if (m_registered) m_unregister(m_data);
    std::free(m_data);
    m_data = nullptr;
    m_bytes = 0;
    m_registered = false;
  }

 private:
  Register m_register;
  Unregister m_unregister;
  std::uint64_t m_sessionId;
  std::byte* m_data = nullptr;
  std::size_t m_bytes = 0;
  bool m_registered = false;
};

}  // namespace flyt::backend
