// Helpers shared by the data-region tests and their peer process (region_peer.cpp).
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <dirent.h>
#include <span>
#include <string>
#include <vector>

#include "flyt/transport/sys.hpp"

namespace flyt::test {

// Word `i` of the test stream.
inline std::uint64_t streamWord(std::uint64_t i) {
  std::uint64_t z = i + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Order-sensitive 64-bit checksum over whole 64-bit words, four independent lanes so it runs near
// memory speed. Feed words in stream order; `index` counts words over the whole stream.
struct Checksum {
  std::uint64_t lanes[4] = {1, 2, 3, 4};
  std::uint64_t index = 0;

  void add(std::span<const std::byte> bytes) {
    const std::size_t words = bytes.size() / 8;
    const auto* p = bytes.data();
    for (std::size_t w = 0; w < words; ++w, ++index) {
      std::uint64_t v;
      std::memcpy(&v, p + w * 8, 8);
      std::uint64_t& h = lanes[index & 3];
      h = ((h ^ v) << 29 | (h ^ v) >> 35) * 0x9e3779b97f4a7c15ULL;
    }
  }
  [[nodiscard]] std::uint64_t value() const {
    return lanes[0] ^ (lanes[1] * 3) ^ (lanes[2] * 5) ^ (lanes[3] * 7) ^ index;
  }
};

inline bool writeAll(int fd, const void* data, std::size_t size) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    auto n = transport::sys("write", [&] { return ::write(fd, p, size); });
    if (!n || *n == 0) {
      return false;
    }
    p += *n;
    size -= static_cast<std::size_t>(*n);
  }
  return true;
}

inline bool readAll(int fd, void* data, std::size_t size) {
  auto* p = static_cast<char*>(data);
  while (size > 0) {
    auto n = transport::sys("read", [&] { return ::read(fd, p, size); });
    if (!n || *n == 0) {
      return false;
    }
    p += *n;
    size -= static_cast<std::size_t>(*n);
  }
  return true;
}

// Region segment files in /dev/shm created by `pid`.
inline std::vector<std::string> regionFilesOf(int pid) {
  const std::string prefix = "flyt-region-" + std::to_string(pid) + "-";
  std::vector<std::string> out;
  if (DIR* dir = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(dir)) {
      if (std::string_view(e->d_name).starts_with(prefix)) {
        out.emplace_back(e->d_name);
      }
    }
    ::closedir(dir);
  }
  return out;
}

// Messages of the streaming test, writer -> reader. length == 0 ends the stream.
struct SlotFilled {
  std::uint64_t offset;
  std::uint64_t length;
  std::uint32_t segment;
  std::uint32_t slot;
};
// Reader -> writer: an acknowledged slot, or after the end marker, the result.
inline constexpr std::uint64_t kStreamEnd = ~0ULL;

}  // namespace flyt::test
