// How the arguments and results of a forwarded call are laid out on the wire.
//
// A call's arguments travel as one byte string (Call.args, a Cap'n Proto Data), its results as
// another (CallResult.results). Each argument contributes according to its codec tag, in order:
//
//   Val<T>    T by value, sizeof(T) bytes in the arguments; nothing in the results. Device pointers
//             and handles (cudaStream_t, cudaEvent_t, ...) are Val: their value is the worker's own
//             address or handle, which the worker validates against the session's tables.
//   In<T>     *p (a const T*) in the arguments; a null pointer is refused on the client.
//   Out<T>    nothing in the arguments; *p (a T*) in the results, written only on success.
//   InOut<T>  both.
//   CStr      a NUL-terminated string (const char*): u32 length, then the bytes without the NUL; a
//             null pointer is refused on the client.
//
// Values are copied with memcpy (host byte order: client and worker share an architecture; the
// handshake will refuse a mismatch once heterogeneous clients exist). The reader checks every length
// and reports truncated or oversized input instead of reading past it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <span>
#include <type_traits>
#include <vector>

namespace flyt::api {

template <class T> struct Val {};
template <class T> struct In {};
template <class T> struct Out {};
template <class T> struct InOut {};
struct CStr {};
template <class... Tags> struct ArgList {};

// Saturating arithmetic for the sizes of device ranges computed from a client's arguments
// (api/cuda.toml's `bytes` expressions): a result that would wrap is UINT64_MAX, which no range
// check accepts; a difference below zero is zero.
[[nodiscard]] constexpr std::uint64_t satAdd(std::uint64_t a, std::uint64_t b) noexcept {
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}
[[nodiscard]] constexpr std::uint64_t satMul(std::uint64_t a, std::uint64_t b) noexcept {
  return b != 0 && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}
[[nodiscard]] constexpr std::uint64_t satSub(std::uint64_t a, std::uint64_t b) noexcept {
  return a < b ? 0 : a - b;
}

// Specialised for every generated function in the generated flyt/api/specs.hpp.
template <auto M> struct Spec;

// Appends values to a byte string. Not thread-safe; the vector is the caller's.
class ArgWriter {
 public:
  explicit ArgWriter(std::vector<std::byte>& out) : m_out(out) {}
  template <class T>
  void put(const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* bytes = reinterpret_cast<const std::byte*>(&value);
    m_out.insert(m_out.end(), bytes, bytes + sizeof(T));
  }
  void putString(std::string_view text) {
    put(static_cast<std::uint32_t>(text.size()));
    const auto* bytes = reinterpret_cast<const std::byte*>(text.data());
    m_out.insert(m_out.end(), bytes, bytes + text.size());
  }
  void putBytes(std::span<const std::byte> bytes) { m_out.insert(m_out.end(), bytes.begin(), bytes.end()); }

 private:
  std::vector<std::byte>& m_out;
};

// Reads values back in the same order. get() returns false (and reads nothing) when fewer than
// sizeof(T) bytes remain; exhausted() says whether everything was consumed.
class ArgReader {
 public:
  explicit ArgReader(std::span<const std::byte> in) : m_in(in) {}
  template <class T>
  [[nodiscard]] bool get(T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (m_in.size() - m_pos < sizeof(T)) return false;
    std::memcpy(&value, m_in.data() + m_pos, sizeof(T));
    m_pos += sizeof(T);
    return true;
  }
  // A string written by putString: false when it is truncated, longer than kMaxString or holds a
  // NUL (which would cut it short for the C function it is passed to).
  static constexpr std::uint32_t kMaxString = 1 << 16;
  [[nodiscard]] bool getString(std::string& text) {
    std::uint32_t length = 0;
    if (!get(length) || length > kMaxString || m_in.size() - m_pos < length) return false;
    text.assign(reinterpret_cast<const char*>(m_in.data() + m_pos), length);
    if (text.find('\0') != std::string::npos) return false;
    m_pos += length;
    return true;
  }
  // The next `count` bytes, consumed; empty and false when fewer remain.
  [[nodiscard]] bool getBytes(std::size_t count, std::span<const std::byte>& bytes) {
    if (m_in.size() - m_pos < count) return false;
    bytes = m_in.subspan(m_pos, count);
    m_pos += count;
    return true;
  }
  [[nodiscard]] bool exhausted() const { return m_pos == m_in.size(); }
  // The bytes not read yet (a trailing variable-length field: a name, packed kernel parameters);
  // consumes them.
  [[nodiscard]] std::span<const std::byte> rest() {
    auto tail = m_in.subspan(m_pos);
    m_pos = m_in.size();
    return tail;
  }

 private:
  std::span<const std::byte> m_in;
  std::size_t m_pos = 0;
};

}  // namespace flyt::api
