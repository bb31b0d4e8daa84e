// A session's device-memory quota and what the session has allocated against it.
//
// The limit may change at any time from any thread (the worker's control thread, on the node's
// `memory-limit` line); charges and releases come from the session's one dispatching thread. A
// limit that shrinks below what is in use takes nothing away: every new allocation fails until the
// use has dropped below it.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace flyt::backend {

class MemoryQuota {
 public:
  // `limitBytes` 0: unlimited.
  explicit MemoryQuota(std::uint64_t limitBytes = 0) noexcept : m_limit(limitBytes) {}
  MemoryQuota(const MemoryQuota&) = delete;
  MemoryQuota& operator=(const MemoryQuota&) = delete;

  // Any thread.
  void setLimit(std::uint64_t bytes) noexcept { m_limit.store(bytes, std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t limit() const noexcept { return m_limit.load(std::memory_order_relaxed); }
  [[nodiscard]] bool limited() const noexcept { return limit() != 0; }
  [[nodiscard]] std::uint64_t used() const noexcept { return m_used.load(std::memory_order_relaxed); }
  // Bytes that may still be allocated; UINT64_MAX when unlimited, 0 when over the limit.
  [[nodiscard]] std::uint64_t remaining() const noexcept {
    const std::uint64_t cap = limit();
    if (cap == 0) return UINT64_MAX;
    const std::uint64_t inUse = used();
    return inUse >= cap ? 0 : cap - inUse;
  }
  [[nodiscard]] bool fits(std::uint64_t bytes) const noexcept { return bytes <= remaining(); }

  // The dispatching thread only. tryCharge counts `bytes` when they fit and says whether they did.
  [[nodiscard]] bool tryCharge(std::uint64_t bytes) noexcept {
    if (!fits(bytes)) return false;
    m_used.fetch_add(bytes, std::memory_order_relaxed);
    return true;
  }
  void release(std::uint64_t bytes) noexcept {
    m_used.store(used() - std::min(bytes, used()), std::memory_order_relaxed);
  }
  void releaseAll() noexcept { m_used.store(0, std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> m_limit;
  std::atomic<std::uint64_t> m_used{0};
};

}  // namespace flyt::backend
