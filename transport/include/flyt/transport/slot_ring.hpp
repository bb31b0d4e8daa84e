// The staging ring: the data area of the region's ring segment cut into equal slots. Client-side
// bookkeeping only; nothing about slot state lives in shared memory (the server learns of a filled
// slot through a BulkRef in a call and answers through the reply, which is when the client releases).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

#include "flyt/transport/error.hpp"

namespace flyt::transport {

struct Slot {
  std::uint32_t index = 0;     // 0 .. slotCount()-1, what release() takes
  std::uint64_t sequence = 0;  // 0, 1, 2, ... in the order slots were handed out, over the ring's life
  std::uint32_t segment = 0;   // ring segment id, for the BulkRef
  std::uint64_t offset = 0;    // byte offset of the slot inside the segment, for the BulkRef
  std::span<std::byte> bytes;  // slotBytes() writable bytes, valid while the ring lives
};

// Slots are handed out strictly in ring order (sequence k gets index k % slotCount()), so a server
// processing BulkRefs in call order touches slots in order. A slot freed early does not jump the
// queue: acquire() waits for the *next* slot in ring order to be free.
// Thread-safe: any number of threads may acquire and release concurrently.
class SlotRing {
 public:
  // `area` must hold slots * slotBytes bytes and start `areaOffset` bytes into segment `segment`.
  // The ring does not own `area`.
  SlotRing(std::span<std::byte> area, std::uint32_t segment, std::uint64_t areaOffset,
           std::uint32_t slots, std::uint64_t slotBytes);

  SlotRing(const SlotRing&) = delete;
  SlotRing& operator=(const SlotRing&) = delete;

  // Hands out the next slot in ring order, waiting up to `timeout` for it to be released
  // (Errc::kTimeout when it is not).
  [[nodiscard]] Result<Slot> acquire(std::chrono::milliseconds timeout);

  // Returns a slot to the ring once the server has acknowledged the call that used it.
  // Errc::kInvalidArgument if `index` is out of range or not currently held.
  [[nodiscard]] Result<void> release(std::uint32_t index);

  [[nodiscard]] std::uint32_t slotCount() const noexcept { return m_slots; }
  [[nodiscard]] std::uint64_t slotBytes() const noexcept { return m_slotBytes; }
  [[nodiscard]] std::uint32_t inFlight() const;

 private:
  std::span<std::byte> m_area;
  std::uint32_t m_segment;
  std::uint64_t m_areaOffset;
  std::uint32_t m_slots;
  std::uint64_t m_slotBytes;

  mutable std::mutex m_mutex;
  std::condition_variable m_freed;
  std::vector<bool> m_held;    // guarded by m_mutex
  std::uint64_t m_next = 0;    // sequence of the next slot to hand out; guarded by m_mutex
  std::uint32_t m_inFlight = 0;
};

}  // namespace flyt::transport
