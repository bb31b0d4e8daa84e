#include "flyt/transport/segment.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <tuple>
#include <cstring>
#include <new>

#include <fmt/format.h>

#include "flyt/transport/sys.hpp"

namespace flyt::transport {

namespace {

// Pinned segments start on a 2 MiB boundary: transparent huge pages may back them.
constexpr std::uint64_t kHugePageBytes = std::uint64_t{2} << 20;

// Closes a descriptor when the scope ends; the mapping outlives it.
struct FdGuard {
  int fd = -1;
  ~FdGuard() {
    if (fd >= 0) {
      ::close(fd);
    }
  }
};

// Maps `fd` shared, at `at` when that range is free (0: wherever the kernel puts it).
Result<std::byte*> mapShared(int fd, std::uint64_t size, bool populate, const std::string& name,
                             std::uintptr_t at = 0) {
  const int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
  if (at != 0 && at % kPageBytes == 0) {
    void* placed = ::mmap(reinterpret_cast<void*>(at), size, PROT_READ | PROT_WRITE, flags | MAP_FIXED_NOREPLACE, fd, 0);
    if (placed == reinterpret_cast<void*>(at)) return static_cast<std::byte*>(placed);
    if (placed != MAP_FAILED) ::munmap(placed, size);  // a kernel without MAP_FIXED_NOREPLACE put it elsewhere
  }
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, fd, 0);
  if (base == MAP_FAILED) {
    const int err = errno;
    return fail(Errc::kSystem, fmt::format("mmap of {} ({} bytes): {}", name, size, std::strerror(err)),
                err);
  }
  return static_cast<std::byte*>(base);
}

Result<void> checkHeader(const SegmentHeader& h, const SegmentInfo& info, std::uint64_t sessionId) {
  if (h.magic != kSegmentMagic || h.layoutVersion != kSegmentLayoutVersion) {
    return fail(Errc::kMalformed, fmt::format("segment {} has no region header (magic {:#x}, layout {})",
                                              info.name, h.magic, h.layoutVersion));
  }
  if (h.segmentId != info.id || h.sessionId != sessionId || h.sizeBytes != info.sizeBytes ||
      h.kind != static_cast<std::uint32_t>(info.kind) || h.dataOffset != kSegmentDataOffset) {
    return fail(Errc::kMalformed,
                fmt::format("segment {} header (id {}, session {:016x}, size {}) does not match the "
                            "announcement (id {}, session {:016x}, size {})",
                            info.name, h.segmentId, h.sessionId, h.sizeBytes, info.id, sessionId,
                            info.sizeBytes));
  }
  return {};
}

Result<void> checkAnnouncement(const SegmentInfo& info) {
  const std::string_view name = info.name;
  if (!name.starts_with('/') || !name.substr(1).starts_with(kSegmentNamePrefix) ||
      name.find('/', 1) != std::string_view::npos || name.size() > 200) {
    return fail(Errc::kMalformed, fmt::format("'{}' is not a region segment name", info.name));
  }
  if (info.sizeBytes <= kSegmentDataOffset || info.sizeBytes % kPageBytes != 0 ||
      info.sizeBytes > kMaxSegmentBytes) {
    return fail(Errc::kMalformed, fmt::format("segment {} announces an unusable size of {} bytes",
                                              info.name, info.sizeBytes));
  }
  if (info.kind != SegmentKind::kStagingRing && info.kind != SegmentKind::kHostMemory) {
    return fail(Errc::kMalformed, fmt::format("segment {} announces unknown kind {}", info.name,
                                              static_cast<std::uint32_t>(info.kind)));
  }
  return {};
}

}  // namespace

std::optional<std::uintptr_t> addressInLargestHole(std::uint64_t bytes, std::uint64_t alignment, int attempt) noexcept {
  constexpr std::uintptr_t kUserTop = std::uintptr_t{1} << 47;
  std::FILE* maps = std::fopen("/proc/self/maps", "re");
  if (maps == nullptr) return std::nullopt;
  std::uintptr_t first = 0, last = 0;  // the largest hole so far
  std::uintptr_t previousEnd = alignment;
  auto consider = [&](std::uintptr_t from, std::uintptr_t to) {
    if (to > from && to - from > last - first) std::tie(first, last) = std::pair{from, to};
  };
  char line[512];
  while (std::fgets(line, sizeof line, maps) != nullptr) {
    unsigned long start = 0, end = 0;
    if (std::sscanf(line, "%lx-%lx", &start, &end) != 2 || start >= kUserTop) continue;
    consider(previousEnd, start);
    previousEnd = std::max<std::uintptr_t>(previousEnd, end);
  }
  std::fclose(maps);
  consider(previousEnd, kUserTop);
  const std::uintptr_t size = last - first;
  const std::uintptr_t below = size / 8 * static_cast<std::uintptr_t>(attempt);
  if (attempt < 0 || size / 2 < bytes + alignment || below > size / 2) return std::nullopt;
  const std::uintptr_t candidate = (first + size / 2 - below) & ~(std::uintptr_t{alignment} - 1);
  if (candidate < first || candidate + bytes > last) return std::nullopt;
  return candidate;
}

std::string segmentName(std::uint32_t creatorPid, std::uint64_t sessionId, std::uint32_t segmentId) {
  return fmt::format("/{}{}-{:016x}-{}", kSegmentNamePrefix, creatorPid, sessionId, segmentId);
}

Segment::Segment(std::uint32_t id, SegmentKind kind, std::string name, std::byte* base,
                 std::uint64_t size)
    : m_id(id), m_kind(kind), m_name(std::move(name)), m_base(base), m_size(size), m_holdsName(true) {}

Segment::Segment(Segment&& other) noexcept
    : m_id(other.m_id),
      m_kind(other.m_kind),
      m_name(std::move(other.m_name)),
      m_base(std::exchange(other.m_base, nullptr)),
      m_size(std::exchange(other.m_size, 0)),
      m_holdsName(std::exchange(other.m_holdsName, false)) {}

Segment& Segment::operator=(Segment&& other) noexcept {
  if (this != &other) {
    reset();
    m_id = other.m_id;
    m_kind = other.m_kind;
    m_name = std::move(other.m_name);
    m_base = std::exchange(other.m_base, nullptr);
    m_size = std::exchange(other.m_size, 0);
    m_holdsName = std::exchange(other.m_holdsName, false);
  }
  return *this;
}

Segment::~Segment() { reset(); }

void Segment::reset() noexcept {
  if (m_holdsName) {
    (void)unlinkName();
  }
  if (m_base != nullptr) {
    ::munmap(m_base, m_size);
    m_base = nullptr;
  }
}

Result<void> Segment::unlinkName() {
  if (!m_holdsName) {
    return {};
  }
  m_holdsName = false;
  auto rc = sys("shm_unlink", [&] { return ::shm_unlink(m_name.c_str()); });
  if (!rc && rc.error().sysErrno != ENOENT) {
    return fail(Errc::kSystem, fmt::format("shm_unlink {}: {}", m_name, rc.error().message),
                rc.error().sysErrno);
  }
  return {};
}

Result<Segment> Segment::create(std::uint32_t id, SegmentKind kind, std::uint64_t sessionId,
                                std::uint64_t sizeBytes, bool populate) {
  if (sizeBytes == 0 || sizeBytes > kMaxSegmentBytes) {
    return fail(Errc::kInvalidArgument,
                fmt::format("segment size {} outside (0, {}] bytes", sizeBytes, kMaxSegmentBytes));
  }
  const std::uint64_t size = alignUp(std::max(sizeBytes, kSegmentDataOffset + kPageBytes), kPageBytes);
  const auto pid = static_cast<std::uint32_t>(::getpid());
  std::string name = segmentName(pid, sessionId, id);
  auto fd = sys("shm_open", [&] { return ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600); });
  if (!fd) {
    return fail(Errc::kSystem, fmt::format("shm_open(O_CREAT|O_EXCL) {}: {}", name, fd.error().message),
                fd.error().sysErrno);
  }
  FdGuard guard{*fd};
  // From here on the Segment owns the name, so every failure below unlinks it.
  Segment segment(id, kind, std::move(name), nullptr, 0);
  if (auto rc = sys("ftruncate", [&] { return ::ftruncate(*fd, static_cast<off_t>(size)); }); !rc) {
    return fail(Errc::kSystem, fmt::format("ftruncate {} to {} bytes: {}", segment.m_name, size,
                                           rc.error().message),
                rc.error().sysErrno);
  }
  // Reserve the pages now: on a full tmpfs a sparse file maps fine and then raises SIGBUS on first
  // touch, in whichever process touches it. posix_fallocate turns that into ENOSPC here.
  if (const int rc = ::posix_fallocate(*fd, 0, static_cast<off_t>(size)); rc != 0) {
    return fail(Errc::kSystem, fmt::format("reserving {} bytes for {}: {} (is /dev/shm full?)", size,
                                           segment.m_name, std::strerror(rc)),
                rc);
  }
  // Pinned host memory where the worker is likely to be able to map it too (see SegmentHeader).
  const std::uintptr_t preferred =
      kind == SegmentKind::kHostMemory ? addressInLargestHole(size, kHugePageBytes).value_or(0) : 0;
  auto base = mapShared(*fd, size, populate, segment.m_name, preferred);
  if (!base) {
    return std::unexpected(std::move(base.error()));
  }
  segment.m_base = *base;
  segment.m_size = size;
  auto* header = new (segment.m_base) SegmentHeader{};
  header->magic = kSegmentMagic;
  header->layoutVersion = kSegmentLayoutVersion;
  header->segmentId = id;
  header->sessionId = sessionId;
  header->sizeBytes = size;
  header->creatorPid = pid;
  header->kind = static_cast<std::uint32_t>(kind);
  header->dataOffset = kSegmentDataOffset;
  header->creatorAddress = reinterpret_cast<std::uintptr_t>(segment.m_base);
  return segment;
}

Result<Segment> Segment::attach(const SegmentInfo& info, std::uint64_t sessionId, bool populate) {
  if (auto ok = checkAnnouncement(info); !ok) {
    return std::unexpected(std::move(ok.error()));
  }
  auto fd = sys("shm_open", [&] { return ::shm_open(info.name.c_str(), O_RDWR, 0); });
  if (!fd) {
    return fail(Errc::kSystem, fmt::format("shm_open {}: {}", info.name, fd.error().message),
                fd.error().sysErrno);
  }
  FdGuard guard{*fd};
  Segment segment(info.id, info.kind, info.name, nullptr, 0);
  // Until every check passed the name is not ours to remove: it may be another session's file.
  segment.m_holdsName = false;
  struct stat st {};
  if (auto rc = sys("fstat", [&] { return ::fstat(*fd, &st); }); !rc) {
    return std::unexpected(std::move(rc.error()));
  }
  if (static_cast<std::uint64_t>(st.st_size) != info.sizeBytes) {
    // Mapping past the end of the file would fault on first touch; refuse instead.
    return fail(Errc::kMalformed, fmt::format("segment {} is {} bytes, announced as {}", info.name,
                                              st.st_size, info.sizeBytes));
  }
  // The creator's address, read before mapping: only a hint (checked again in the mapping below).
  SegmentHeader announced{};
  if (::pread(*fd, &announced, sizeof announced, 0) != static_cast<ssize_t>(sizeof announced)) announced = {};
  auto base = mapShared(*fd, info.sizeBytes, populate, info.name, static_cast<std::uintptr_t>(announced.creatorAddress));
  if (!base) {
    return std::unexpected(std::move(base.error()));
  }
  segment.m_base = *base;
  segment.m_size = info.sizeBytes;
  SegmentHeader header;
  std::memcpy(&header, segment.m_base, sizeof header);
  if (auto ok = checkHeader(header, info, sessionId); !ok) {
    return std::unexpected(std::move(ok.error()));
  }
  segment.m_holdsName = true;
  return segment;
}

Result<std::vector<std::string>> sweepStaleSegments(std::string_view shmDir) {
  const std::string dirPath(shmDir);
  DIR* dir = ::opendir(dirPath.c_str());
  if (dir == nullptr) {
    const int err = errno;
    return fail(Errc::kSystem, fmt::format("opendir {}: {}", dirPath, std::strerror(err)), err);
  }
  std::vector<std::string> removed;
  while (const dirent* entry = ::readdir(dir)) {
    const std::string_view file = entry->d_name;
    if (!file.starts_with(kSegmentNamePrefix)) {
      continue;
    }
    const std::string_view rest = file.substr(kSegmentNamePrefix.size());
    std::uint32_t pid = 0;
    const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), pid);
    if (ec != std::errc{} || end == rest.data() || *end != '-' || pid == 0) {
      continue;
    }
    auto alive = sys("kill", [&] { return ::kill(static_cast<pid_t>(pid), 0); });
    if (alive || alive.error().sysErrno != ESRCH) {
      continue;  // running, or not ours to signal (EPERM): alive either way
    }
    const std::string name = "/" + std::string(file);
    auto rc = sys("shm_unlink", [&] { return ::shm_unlink(name.c_str()); });
    if (rc) {
      removed.push_back(name);
    }
  }
  ::closedir(dir);
  return removed;
}

}  // namespace flyt::transport
