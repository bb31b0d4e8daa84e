// The device allocations of one session: every copy and memset is checked against them, so a client
// cannot reach memory it did not allocate (another allocation of the same process is reachable only
// through its own pointers).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

namespace flyt::backend {

class AllocationTable {
 public:
  void add(const void* base, std::size_t bytes) {
    if (base != nullptr && bytes > 0) m_ranges[address(base)] = bytes;
  }
  // True when `base` is the start of an allocation (and removes it).
  bool remove(const void* base) { return m_ranges.erase(address(base)) == 1; }
  // The size of the allocation starting at `base`, which is removed; 0 when there is none.
  std::size_t take(const void* base) {
    auto it = m_ranges.find(address(base));
    if (it == m_ranges.end()) return 0;
    const std::size_t bytes = it->second;
    m_ranges.erase(it);
    return bytes;
  }
  [[nodiscard]] bool isBase(const void* base) const { return m_ranges.contains(address(base)); }

  // True when [pointer, pointer + bytes) lies inside one allocation. Overflow-safe.
  [[nodiscard]] bool contains(const void* pointer, std::size_t bytes) const {
    const std::uintptr_t start = address(pointer);
    auto it = m_ranges.upper_bound(start);
    if (it == m_ranges.begin()) return false;
    --it;
    const std::uintptr_t offset = start - it->first;
    return offset <= it->second && bytes <= it->second - offset;
  }

  // True when [pointer, pointer + bytes) lies inside allocations that follow each other without a
  // gap (mappings of one reservation, which a tensor may span). Overflow-safe.
  [[nodiscard]] bool containsContiguous(const void* pointer, std::size_t bytes) const {
    std::uintptr_t start = address(pointer);
    auto it = m_ranges.upper_bound(start);
    if (it == m_ranges.begin()) return false;
    --it;
    while (true) {
      const std::uintptr_t offset = start - it->first;
      if (offset > it->second) return false;
      const std::size_t here = it->second - offset;
      if (bytes <= here) return true;
      bytes -= here;
      start = it->first + it->second;
      ++it;
      if (it == m_ranges.end() || it->first != start) return false;
    }
  }
  // True when [pointer, pointer + bytes) shares a byte with an allocation.
  [[nodiscard]] bool overlaps(const void* pointer, std::size_t bytes) const {
    const std::uintptr_t start = address(pointer);
    auto it = m_ranges.lower_bound(start);
    if (it != m_ranges.end() && bytes > 0 && it->first - start < bytes) return true;
    if (it == m_ranges.begin()) return false;
    --it;
    return start - it->first < it->second;
  }
  // The size of the allocation starting at `base`; 0 when there is none.
  [[nodiscard]] std::size_t sizeAt(const void* base) const {
    auto it = m_ranges.find(address(base));
    return it == m_ranges.end() ? 0 : it->second;
  }

  [[nodiscard]] std::size_t count() const { return m_ranges.size(); }
  [[nodiscard]] std::vector<void*> bases() const {
    std::vector<void*> out;
    for (const auto& [base, bytes] : m_ranges) out.push_back(reinterpret_cast<void*>(base));
    return out;
  }

 private:
  static std::uintptr_t address(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }
  std::map<std::uintptr_t, std::size_t> m_ranges;
};

}  // namespace flyt::backend
