// A ShmChannel session's ports and control block; see shm_session.hpp.
#include "shm_session.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cstring>

#include <thread>
#include <vector>

#include <fmt/format.h>

#include "flyt/transport/sys.hpp"
#include "shm_chunk.hpp"
#include "shm_runtime.hpp"

namespace flyt::transport::shm {
namespace {

constexpr std::uint64_t kQueueCapacity = 256;  // iceoryx's maximum; never reached (the channel's window)

iox::capro::ServiceDescription service(const std::string& name, const char* direction, std::uint64_t sessionId) {
  const auto event = fmt::format("{}.{:016x}", direction, sessionId);
  return {iox::capro::IdString_t(iox::cxx::TruncateToCapacity, "flyt"),
          iox::capro::IdString_t(iox::cxx::TruncateToCapacity, name.c_str()),
          iox::capro::IdString_t(iox::cxx::TruncateToCapacity, event.c_str())};
}

iox::popo::PublisherOptions publisherOptions() {
  iox::popo::PublisherOptions options;
  options.subscriberTooSlowPolicy = iox::popo::ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER;
  return options;
}
iox::popo::SubscriberOptions subscriberOptions() {
  iox::popo::SubscriberOptions options;
  options.queueCapacity = kQueueCapacity;
  options.queueFullPolicy = iox::popo::QueueFullPolicy::BLOCK_PRODUCER;
  return options;
}

// Keeps abandoned sessions for the rest of the process and never destroys them. The container stays
// reachable from a global, so LeakSanitizer does not report them.
void bury(Ports* ports) {
  static auto* mutex = new std::mutex;
  static auto* graveyard = new std::vector<Ports*>;
  std::lock_guard lock(*mutex);
  graveyard->push_back(ports);
  log().debug("abandoned the iceoryx ports of a session whose peer died ({} so far)", graveyard->size());
}

}  // namespace

sockaddr_un listenAddress(const std::string& name, socklen_t& length) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const auto path = "flyt-shm/" + name;  // abstract: sun_path[0] stays '\0'
  std::memcpy(addr.sun_path + 1, path.data(), path.size());
  length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + path.size());
  return addr;
}

ControlMapping::~ControlMapping() {
  if (block) ::munmap(block, kMappingBytes);
}

Result<ControlMapping> createControl(UniqueFd& memfd) {
  auto fd = sys("memfd_create", [] { return ::memfd_create("flyt-shm-control", MFD_CLOEXEC | MFD_ALLOW_SEALING); });
  if (!fd) return std::unexpected(fd.error());
  memfd = UniqueFd(*fd);
  if (auto ok = sys("ftruncate", [&] { return ::ftruncate(memfd.get(), kMappingBytes); }); !ok) {
    return std::unexpected(ok.error());
  }
  if (auto ok = sys("fcntl", [&] { return ::fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL); });
      !ok) {
    return std::unexpected(ok.error());
  }
  void* mapped = ::mmap(nullptr, kMappingBytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(), 0);
  if (mapped == MAP_FAILED) return fail(Errc::kSystem, "mmap of the shm control block failed", errno);
  ControlMapping control(mapped);
  new (control.block) ControlBlock{};
  control.block->magic = kMagic;
  return control;
}

Result<ControlMapping> mapControl(int memfd) {
  struct stat st{};
  if (::fstat(memfd, &st) != 0 || st.st_size != static_cast<off_t>(kMappingBytes)) {
    return fail(Errc::kMalformed, fmt::format("shm control block is not {} bytes", kMappingBytes));
  }
  // A peer that could shrink the file would make every access past the new end a SIGBUS here.
  const int seals = ::fcntl(memfd, F_GET_SEALS);
  if (seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
    return fail(Errc::kMalformed, "shm control block is not sealed against shrinking");
  }
  void* addr = ::mmap(nullptr, kMappingBytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (addr == MAP_FAILED) return fail(Errc::kSystem, "mmap of the shm control block failed", errno);
  ControlMapping control(addr);
  if (control.block->magic != kMagic) return fail(Errc::kMalformed, "shm control block has a bad magic");
  return control;
}

Ports::Ports(ControlMapping mapping, int side, const iox::capro::ServiceDescription& out,
             const iox::capro::ServiceDescription& in)
    : control(std::move(mapping)), closedMark{control.block, side}, publisher(out, publisherOptions()),
      subscriber(in, subscriberOptions()) {}

bool Ports::connected() const {
  return publisher.hasSubscribers() && subscriber.getSubscriptionState() == iox::SubscribeState::SUBSCRIBED;
}

Result<std::shared_ptr<Ports>> openPorts(const std::string& name, std::uint64_t sessionId, int side,
                                         ControlMapping control) {
  if (auto serving = checkRuntimeRouDi(); !serving) return std::unexpected(serving.error());
  const char* out = side == kClientToServer ? "c2s" : "s2c";
  const char* in = side == kClientToServer ? "s2c" : "c2s";
  std::shared_ptr<Ports> ports(
      new Ports(std::move(control), side, service(name, out, sessionId), service(name, in, sessionId)),
      [](Ports* p) {
        if (p->abandoned.load(std::memory_order_acquire)) {
          bury(p);
        } else {
          delete p;
        }
      });
  return ports;
}

Result<void> waitConnected(const Ports& ports, std::chrono::steady_clock::time_point deadline,
                           const std::string& what) {
  while (!ports.connected()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return fail(Errc::kTimeout, fmt::format("{}: iceoryx services did not connect in time", what));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return {};
}

}  // namespace flyt::transport::shm
