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
//
// Values are copied with memcpy (host byte order: client and worker share an architecture; the
// handshake will refuse a mismatch once heterogeneous clients exist). The reader checks every length
// and reports truncated or oversized input instead of reading past it.
#pragma once

#include <cstddef>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

namespace flyt::api {

template <class T> struct Val {};
template <class T> struct In {};
template <class T> struct Out {};
template <class T> struct InOut {};
template <class... Tags> struct ArgList {};

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
