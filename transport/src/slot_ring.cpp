#include "flyt/transport/slot_ring.hpp"

#include <fmt/format.h>

namespace flyt::transport {

SlotRing::SlotRing(std::span<std::byte> area, std::uint32_t segment, std::uint64_t areaOffset,
                   std::uint32_t slots, std::uint64_t slotBytes)
    : m_area(area),
      m_segment(segment),
      m_areaOffset(areaOffset),
      m_slots(slots),
      m_slotBytes(slotBytes),
      m_held(slots, false) {}

Result<Slot> SlotRing::acquire(std::chrono::milliseconds timeout) {
  std::unique_lock lock(m_mutex);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // Each waiter re-reads m_next: whoever wakes first takes the next slot, the others wait for the one
  // after it.
  while (m_held[m_next % m_slots]) {
    if (m_freed.wait_until(lock, deadline) == std::cv_status::timeout && m_held[m_next % m_slots]) {
      return fail(Errc::kTimeout,
                  fmt::format("no staging slot freed within {} ms ({} slots of {} bytes, {} in flight)",
                              timeout.count(), m_slots, m_slotBytes, m_inFlight));
    }
  }
  const std::uint64_t sequence = m_next++;
  const auto index = static_cast<std::uint32_t>(sequence % m_slots);
  m_held[index] = true;
  ++m_inFlight;
  const std::uint64_t start = std::uint64_t{index} * m_slotBytes;
  return Slot{index, sequence, m_segment, m_areaOffset + start, m_area.subspan(start, m_slotBytes)};
}

Result<void> SlotRing::release(std::uint32_t index) {
  {
    std::lock_guard lock(m_mutex);
    if (index >= m_slots || !m_held[index]) {
      return fail(Errc::kInvalidArgument,
                  fmt::format("release of staging slot {} which is not held (ring of {} slots)", index,
                              m_slots));
    }
    m_held[index] = false;
    --m_inFlight;
  }
  // Waiters wait for different slots, so wake them all; the ring is small.
  m_freed.notify_all();
  return {};
}

std::uint32_t SlotRing::inFlight() const {
  std::lock_guard lock(m_mutex);
  return m_inFlight;
}

}  // namespace flyt::transport
