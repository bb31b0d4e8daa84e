#include "parallel_copy.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

namespace flyt::interpose {
namespace {

// Below this a part is not worth waking a thread for (a wake-up costs a few microseconds; 512 KiB
// takes about 50 us on one thread).
constexpr std::size_t kMinPartBytes = 512 << 10;
constexpr auto kHelperSpin = std::chrono::microseconds(500);

class CopyPool {
 public:
  static CopyPool& get() {
    static CopyPool* const pool = new CopyPool();  // leaked: its threads may outlive static destructors
    return *pool;
  }

  void copy(std::byte* to, const std::byte* from, std::size_t bytes, unsigned threads) {
    const std::size_t parts = std::min<std::size_t>(threads, bytes / kMinPartBytes);
    if (parts <= 1) {
      std::memcpy(to, from, bytes);
      return;
    }
    std::lock_guard job(m_jobMutex);  // one split copy at a time; callers queue here
    startHelpers(static_cast<unsigned>(parts - 1));
    // Parts are 4 KiB multiples so that no two threads write into one page.
    const std::size_t partBytes = (bytes / parts + 4095) / 4096 * 4096;
    {
      std::lock_guard lock(m_mutex);
      m_to = to;
      m_from = from;
      m_bytes = bytes;
      m_partBytes = partBytes;
      m_nextPart = 1;  // part 0 is the caller's
      m_parts = (bytes + partBytes - 1) / partBytes;
      m_pending = m_parts - 1;
      ++m_generation;
      m_published.store(m_generation, std::memory_order_release);
    }
    m_work.notify_all();
    std::memcpy(to, from, std::min(partBytes, bytes));
    std::unique_lock lock(m_mutex);
    m_done.wait(lock, [&] { return m_pending == 0; });
  }

 private:
  void startHelpers(unsigned wanted) {
    while (m_helpers.size() < wanted) m_helpers.emplace_back([this] { helperLoop(); });
  }

  void helperLoop() {
    std::uint64_t seen = 0;
    std::unique_lock lock(m_mutex);
    for (;;) {
      // A pipelined copy hands out a slot's parts every few hundred microseconds: poll for the next
      // job a while before sleeping, since a wake-up can cost as much as the part itself.
      lock.unlock();
      const auto until = std::chrono::steady_clock::now() + kHelperSpin;
      while (m_published.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until) {
      }
      lock.lock();
      m_work.wait(lock, [&] { return m_generation != seen && m_nextPart < m_parts; });
      while (m_nextPart < m_parts) {
        const std::size_t part = m_nextPart++;
        const std::size_t offset = part * m_partBytes;
        const std::size_t length = std::min(m_partBytes, m_bytes - offset);
        lock.unlock();
        std::memcpy(m_to + offset, m_from + offset, length);
        lock.lock();
        if (--m_pending == 0) m_done.notify_one();
      }
      seen = m_generation;
    }
  }

  std::mutex m_jobMutex;
  std::mutex m_mutex;
  std::condition_variable m_work;
  std::condition_variable m_done;
  std::vector<std::jthread> m_helpers;
  std::uint64_t m_generation = 0;             // guarded by m_mutex
  std::atomic<std::uint64_t> m_published{0};  // m_generation, for the helpers' polling
  std::byte* m_to = nullptr;
  const std::byte* m_from = nullptr;
  std::size_t m_bytes = 0;
  std::size_t m_partBytes = 0;
  std::size_t m_nextPart = 0;
  std::size_t m_parts = 0;
  std::size_t m_pending = 0;
};

}  // namespace

void parallelCopy(void* to, const void* from, std::size_t bytes, unsigned threads) noexcept {
  CopyPool::get().copy(static_cast<std::byte*>(to), static_cast<const std::byte*>(from), bytes,
                       std::max(threads, 1U));
}

}  // namespace flyt::interpose
