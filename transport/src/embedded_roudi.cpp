// The embedded RouDi, RouDi reachability and the process's iceoryx runtime registration.
//
// iceoryx 2.0 turns most RouDi start-up problems into a fatal error that aborts the process (a
// second RouDi finds the lock file "/tmp/iox-unique-roudi.lock" taken; its FileLock error is then
// dereferenced as a value), and a runtime that registers while no RouDi runs waits 60 s and then
// aborts. So everything here decides *before* calling into iceoryx:
//   - "does a RouDi run?" is answered by trying flock() on RouDi's own lock file (RouDi holds an
//     exclusive flock on it for its whole life; flock locks conflict between open file
//     descriptions, so this also sees a RouDi in this very process);
//   - "can I register?" is answered by connecting to RouDi's unix datagram socket "/tmp/roudi":
//     connect() on a datagram socket never blocks and fails with ECONNREFUSED when nobody is bound.
//
// Why an embedded RouDi may outlive its owner's use of it: a host has one RouDi, and every Flyt
// process of the host (other nodes, their workers, applications) attaches to whichever process
// started it. iceoryx 2.0's RouDi destructor destroys every port in the shared management segment
// (pthread_mutex_destroy on each port's lock) and unlinks the segments, while the other processes
// still have them mapped and in use: their next publish() then fails to lock with EINVAL and
// iceoryx aborts the process (POPO__CHUNK_LOCKING_ERROR), an application included. So stopping
// first stops RouDi's threads (no new registrations or ports; its socket goes away), then looks
// for live processes other than this one that still hold ports; if there are any, the shared
// memory is left to them, not destroyed: their sessions keep working until they end, and the
// next RouDi of the host purges and recreates the segments.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <poll.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <iostream>
#include <streambuf>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "iceoryx_hoofs/log/logmanager.hpp"
#include "iceoryx_hoofs/posix_wrapper/posix_access_rights.hpp"
#include "iceoryx_posh/iceoryx_posh_config.hpp"
#include "iceoryx_posh/iceoryx_posh_types.hpp"
#include "iceoryx_posh/mepoo/chunk_header.hpp"
#include "iceoryx_posh/internal/roudi/roudi.hpp"
#include "iceoryx_posh/roudi/iceoryx_roudi_components.hpp"
#include "iceoryx_posh/roudi/port_pool.hpp"
#include "iceoryx_posh/runtime/posh_runtime.hpp"

#include "flyt/transport/shm_channel.hpp"
#include "flyt/transport/units.hpp"
#include "shm_chunk.hpp"
#include "shm_runtime.hpp"

#include "flyt/transport/log.hpp"

namespace flyt::transport {
namespace {

// Where iceoryx 2.0 on Linux keeps them: platform::IOX_LOCK_FILE_PATH_PREFIX + ROUDI_LOCK_NAME +
// ".lock", and IOX_UDS_SOCKET_PATH_PREFIX + IPC_CHANNEL_ROUDI_NAME.
const std::string kRouDiLockPath = std::string("/tmp/") + iox::roudi::ROUDI_LOCK_NAME + ".lock";
const std::string kRouDiSocketPath = std::string("/tmp/") + iox::roudi::IPC_CHANNEL_ROUDI_NAME;

using shm::kMessageHeadroom;

// RouDi's discovery thread touches this file every cycle (100 ms). A RouDi whose cleanup of a
// process that died holding an iceoryx port lock waits on that lock for good stops touching it, and
// every iceoryx request to it (a registration, a port) would then wait without a bound: processes
// ask rouDiStalled() first and fail with a message instead. A RouDi that is not Flyt's has no such
// file and is never called stalled.
const std::string kHeartbeatPath = "/tmp/flyt-roudi.heartbeat";
constexpr auto kStalledAfter = std::chrono::seconds(3);

// How long ago the host's RouDi last completed a cycle, when a Flyt RouDi runs and it was longer
// than kStalledAfter. A heartbeat file of another user, or older than the RouDi's socket (left by a
// RouDi that was killed), is not this RouDi's.
std::optional<std::chrono::seconds> rouDiStalledFor() {
  struct stat st{};
  struct stat socket{};
  if (::stat(kHeartbeatPath.c_str(), &st) != 0 || ::stat(kRouDiSocketPath.c_str(), &socket) != 0) return std::nullopt;
  if (st.st_uid != socket.st_uid || st.st_mtim.tv_sec < socket.st_ctim.tv_sec) return std::nullopt;
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  const auto age = std::chrono::seconds(now.tv_sec - st.st_mtim.tv_sec);
  if (age <= kStalledAfter) return std::nullopt;
  return age;
}

std::string stalledMessage(std::chrono::seconds age) {
  return fmt::format("the host's iceoryx RouDi (inside flyt-node) has not completed a cycle for {} s: it is stuck "
                     "cleaning up after a process killed inside a shared-memory call, and would never answer. "
                     "Restart flyt-node (its TCP sessions are unaffected), or use a tcp:// endpoint",
                     age.count());
}

// True when some RouDi (here or in another process) holds its lock file.
bool rouDiLockHeld() {
  const int fd = ::open(kRouDiLockPath.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;  // never created, or removed by a RouDi that stopped
  int rc;
  do {
    rc = ::flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  const bool held = rc != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // also drops our probe lock, if we got it
  return held;
}

// RouDi's message thread writes "RouDi is ready for clients" to std::cout, bypassing its logger;
// Flyt keeps stdout for the application. While RouDi starts, std::cout goes into this buffer.
class CaptureBuf final : public std::streambuf {
 public:
  [[nodiscard]] bool contains(std::string_view text) {
    std::lock_guard lock(m_mutex);
    return m_text.find(text) != std::string::npos;
  }
  [[nodiscard]] std::string text() {
    std::lock_guard lock(m_mutex);
    return m_text;
  }

 protected:
  int overflow(int ch) override {
    if (ch != traits_type::eof()) {
      std::lock_guard lock(m_mutex);
      m_text.push_back(static_cast<char>(ch));
    }
    return ch;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    std::lock_guard lock(m_mutex);
    m_text.append(s, static_cast<std::size_t>(n));
    return n;
  }

 private:
  std::mutex m_mutex;
  std::string m_text;
};

// iceoryx's RouDi, with shutdown() (protected there) reachable: it joins RouDi's threads without
// touching the shared memory.
//
// Process liveness: iceoryx's own monitoring removes a process whose keep-alive (sent every 300 ms
// by a thread of that process) is 1.5 s late, together with its ports, even when the process is
// alive. With 128 sessions starting at once on a 2-core host (or under a sanitizer) that happens to
// live processes, which then abort inside iceoryx on their next use of a port (a destroyed mutex:
// POPO__CHUNK_LOCKING_ERROR) and can leave RouDi stalled. So iceoryx's monitoring is off and RouDi
// removes a process when the process has actually ended: each registration opens a pidfd of the
// registering pid, and the discovery thread (cyclicUpdateHook, every 100 ms) releases the ports of
// every process whose pidfd reports its end. A process that deregisters itself is forgotten. (This
// needs the applications in the node's PID namespace, as they share its /dev/shm and /tmp anyway.)
class HostRouDi final : public iox::roudi::RouDi {
 public:
  explicit HostRouDi(iox::roudi::IceOryxRouDiComponents& components)
      // No SIGTERM to registered processes (this one included) when RouDi stops. The message thread
      // starts once this object is complete, since it calls processMessage below.
      : RouDi(components.rouDiMemoryManager, components.portManager,
              RoudiStartupParameters{iox::roudi::MonitoringMode::OFF, false, RuntimeMessagesThreadStart::DEFER_START}) {
    startProcessRuntimeMessagesThread();
  }
  ~HostRouDi() override {
    shutdown();  // RouDi's threads call into this object: stop them before its members go
    for (const auto& [name, fd] : m_watched) ::close(fd);
  }
  HostRouDi(const HostRouDi&) = delete;
  HostRouDi& operator=(const HostRouDi&) = delete;

  void stopThreads() { shutdown(); }
  // How long ago the discovery thread last completed a cycle.
  [[nodiscard]] std::chrono::steady_clock::duration sinceLastCycle() const {
    return std::chrono::steady_clock::now() -
           std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(m_lastCycle.load()));
  }

 protected:
  void processMessage(const iox::runtime::IpcMessage& message, const iox::runtime::IpcMessageType& cmd,
                      const iox::RuntimeName_t& runtimeName) noexcept override {
    if (cmd == iox::runtime::IpcMessageType::REG) {
      std::uint32_t pid = 0;
      uid_t user = 0;
      std::int64_t timestamp = 0;
      (void)parseRegisterMessage(message, pid, user, timestamp);
      watch(runtimeName, static_cast<pid_t>(pid));
    }
    RouDi::processMessage(message, cmd, runtimeName);
    if (cmd == iox::runtime::IpcMessageType::TERMINATION) forget(runtimeName);
  }

  void cyclicUpdateHook() noexcept override {
    m_lastCycle.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_relaxed);
    (void)::utimensat(AT_FDCWD, kHeartbeatPath.c_str(), nullptr, 0);
    std::vector<iox::RuntimeName_t> ended;
    {
      std::lock_guard lock(m_mutex);
      for (auto it = m_watched.begin(); it != m_watched.end();) {
        pollfd p{it->second, POLLIN, 0};
        if (::poll(&p, 1, 0) > 0) {
          ended.push_back(it->first);
          ::close(it->second);
          it = m_watched.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (const auto& name : ended) {
      shm::log().debug("RouDi: {} ended without deregistering; releasing its ports", name.c_str());
      (void)m_prcMgr->unregisterProcess(name);
    }
  }

 private:
  void watch(const iox::RuntimeName_t& name, pid_t pid) {
    const int fd = pid > 0 ? static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)) : -1;
    if (fd < 0) return;  // gone already (RouDi refuses or cleans it up), or not ours to watch
    std::lock_guard lock(m_mutex);
    if (auto [it, added] = m_watched.emplace(name, fd); !added) {
      ::close(it->second);  // the same name registered again (a restarted process)
      it->second = fd;
    }
  }
  void forget(const iox::RuntimeName_t& name) {
    std::lock_guard lock(m_mutex);
    if (auto it = m_watched.find(name); it != m_watched.end()) {
      ::close(it->second);
      m_watched.erase(it);
    }
  }

  std::mutex m_mutex;
  std::map<iox::RuntimeName_t, int> m_watched;  // runtime -> pidfd of its process; m_mutex
  std::atomic<std::chrono::steady_clock::rep> m_lastCycle{std::chrono::steady_clock::now().time_since_epoch().count()};
};

// Whether the runtime `name` belongs to a live process other than this one. Flyt names runtimes
// "flyt-<pid>-<random>" (ensureRuntime); any other name but RouDi's own counts as live.
bool liveOtherRuntime(std::string_view name) {
  if (name == iox::roudi::IPC_CHANNEL_ROUDI_NAME) return false;
  constexpr std::string_view kPrefix = "flyt-";
  if (!name.starts_with(kPrefix)) return true;
  const auto digits = name.substr(kPrefix.size());
  pid_t pid = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), pid);
  if (ec != std::errc{} || pid <= 0) return true;
  if (pid == ::getpid()) return false;
  if (::kill(pid, 0) != 0 && errno != EPERM) return false;
  // A killed child its parent has not reaped yet is dead too: state 'Z' in /proc/<pid>/stat.
  std::ifstream stat(fmt::format("/proc/{}/stat", pid));
  const std::string line((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto comm = line.rfind(')');
  return comm == std::string::npos || line.compare(comm, 3, ") Z") != 0;
}

// The runtimes of live processes other than this one that hold ports in RouDi's shared memory.
// Call only after HostRouDi::stopThreads(): RouDi no longer changes its port lists then.
std::set<std::string> otherUsers(iox::roudi::IceOryxRouDiComponents& components) {
  std::set<std::string> names;
  auto pool = components.rouDiMemoryManager.portPool();
  if (!pool.has_value()) return names;
  const auto note = [&](const auto& ports) {
    for (const auto* port : ports) {
      const std::string name(port->m_runtimeName.c_str());
      if (liveOtherRuntime(name)) names.insert(name);
    }
  };
  note(pool.value()->getPublisherPortDataList());
  note(pool.value()->getSubscriberPortDataList());
  return names;
}

// Tells one RouDi instance from a later one: the socket file each binds anew.
struct RouDiIdentity {
  dev_t device;
  ino_t inode;
  std::int64_t changedNs;
  bool operator==(const RouDiIdentity&) const = default;
};
std::optional<RouDiIdentity> tryRouDiIdentity() {
  struct stat st{};
  if (::stat(kRouDiSocketPath.c_str(), &st) != 0) return std::nullopt;
  const std::int64_t changedNs = std::int64_t{st.st_ctim.tv_sec} * 1'000'000'000 + st.st_ctim.tv_nsec;
  return RouDiIdentity{st.st_dev, st.st_ino, changedNs};
}

std::mutex g_runtimeMutex;
std::optional<RouDiIdentity> g_registeredWith;  // set once this process registered; g_runtimeMutex

std::atomic<bool> g_ownedHere{false};
std::mutex g_startMutex;
std::atomic<bool> g_abandonedSession{false};

// Runs (on_exit, registered right after iceoryx's runtime was created) before that runtime's static
// destructor, which deregisters from RouDi and waits for the answer without a bound. A RouDi that is
// gone, replaced, or stalled cleaning up a peer that died holding a port lock never answers; the
// application, whose main() has returned, would then hang for good. Normal exits are untouched.
void boundExitIfRouDiMayStall(int status, void*) {
  const bool mayStall = g_abandonedSession.load() || !rouDiReachable() || tryRouDiIdentity() != g_registeredWith ||
                        rouDiStalledFor().has_value();
  if (mayStall) endProcessWithin(kExitGrace, status);
}

}  // namespace

namespace shm {

spdlog::logger& log() { return flyt::logger("shm"); }

void noteAbandonedSession() { g_abandonedSession.store(true); }

void quietIceoryxLog() {
  static std::once_flag once;
  std::call_once(once, [] {
    iox::log::LogManager::GetLogManager().SetDefaultLogLevel(iox::log::LogLevel::kWarn,
                                                             iox::log::LogLevelOutput::kHideLogLevel);
  });
}

Result<void> ensureRuntime() {
  std::lock_guard lock(g_runtimeMutex);
  if (g_registeredWith) return {};
  const auto identity = tryRouDiIdentity();  // taken first: a RouDi replaced meanwhile fails later checks
  if (!identity || !rouDiReachable()) {
    return fail(Errc::kUnavailable,
                fmt::format("no iceoryx RouDi runs on this host ({} refuses connections); start "
                            "flyt-node or use a tcp:// endpoint",
                            kRouDiSocketPath));
  }
  if (const auto stalled = rouDiStalledFor()) return fail(Errc::kUnavailable, stalledMessage(*stalled));
  quietIceoryxLog();
  std::random_device random;
  const auto name = fmt::format("flyt-{}-{:08x}", ::getpid(), random());
  iox::runtime::PoshRuntime::initRuntime(iox::RuntimeName_t(iox::cxx::TruncateToCapacity, name.c_str()));
  g_registeredWith = identity;
  ::on_exit(boundExitIfRouDiMayStall, nullptr);
  log().debug("registered with RouDi as {}", name);
  return {};
}

Result<void> checkRuntimeRouDi() {
  std::lock_guard lock(g_runtimeMutex);
  if (!g_registeredWith) {
    return fail(Errc::kUnavailable, "this process is not registered with an iceoryx RouDi");
  }
  if (tryRouDiIdentity() != g_registeredWith || !rouDiReachable()) {
    return fail(Errc::kUnavailable,
                "the iceoryx RouDi this process registered with has stopped (its owner, maybe another "
                "flyt-node, exited); iceoryx 2.0 cannot register a process again, so this process can open "
                "no more shm sessions: restart it, or use a tcp:// endpoint");
  }
  if (const auto stalled = rouDiStalledFor()) return fail(Errc::kUnavailable, stalledMessage(*stalled));
  return {};
}

}  // namespace shm

void endProcessWithin(std::chrono::milliseconds grace, int status) {
  std::thread([grace, status] {
    std::this_thread::sleep_for(grace);
    std::fflush(nullptr);
    std::_Exit(status);
  }).detach();
}

std::vector<ShmChunkClass> shmChunkClasses(const TransportConfig& config) {
  const auto inlineBytes = static_cast<std::uint32_t>(
      std::min<std::uint64_t>(config.shmInlinePayloadBytes, (1ULL << 31)));
  const std::uint32_t sessions = std::max<std::uint32_t>(config.shmSessions, 1);
  // Every session may hold its tier's window in each direction; `floor` keeps the pools of a small
  // shm_sessions as large as they were before windows existed.
  const auto make = [&](std::uint32_t bytes, std::uint32_t floor) {
    const std::uint32_t window = shm::kTierWindow[shm::chunkTier(bytes)];
    return ShmChunkClass{bytes, std::max(floor, 2 * window * sessions), window};
  };
  std::vector<ShmChunkClass> classes{make(4U << 10, 2048), make(64U << 10, 256)};
  const std::uint32_t large = ((inlineBytes + kMessageHeadroom) + 7U) & ~7U;
  if (large > classes.back().bytes) classes.push_back(make(std::min(large, shm::kMediumChunkBytes), 32));
  if (large > classes.back().bytes) classes.push_back(make(large, 32));
  return classes;
}

std::uint64_t shmPoolBytes(const TransportConfig& config) {
  std::uint64_t total = 0;
  for (const auto& c : shmChunkClasses(config)) {
    total += std::uint64_t(c.count) * (c.bytes + sizeof(iox::mepoo::ChunkHeader));
  }
  return total;
}

bool rouDiReachable() {
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, kRouDiSocketPath.c_str(), sizeof(addr.sun_path) - 1);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

struct EmbeddedRouDi::Impl {
  explicit Impl(const iox::RouDiConfig_t& config) : components(config), roudi(components) {
    if (const int fd = ::open(kHeartbeatPath.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644); fd >= 0) ::close(fd);
    (void)::utimensat(AT_FDCWD, kHeartbeatPath.c_str(), nullptr, 0);
    watchdog = std::thread([this] { watch(); });
  }
  ~Impl() {
    stopWatchdog();
    g_ownedHere = false;
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // Says once, loudly, when RouDi's discovery thread stops completing cycles (see kHeartbeatPath).
  void watch() {
    std::unique_lock lock(watchMutex);
    while (!watchStop) {
      watchChanged.wait_for(lock, std::chrono::milliseconds(500));
      if (!stalled && roudi.sinceLastCycle() > kStalledAfter) {
        stalled = true;
        shm::log().error("the embedded RouDi has not completed a cycle for over {} s: it is stuck cleaning up after "
                         "a process killed inside a shared-memory call (an iceoryx 2.0 port lock that is not "
                         "robust). New shared-memory sessions are refused with a message; existing ones and TCP "
                         "go on. Restart this node to clear it",
                         kStalledAfter.count());
      }
    }
  }
  void stopWatchdog() {
    {
      std::lock_guard lock(watchMutex);
      watchStop = true;
    }
    watchChanged.notify_all();
    if (watchdog.joinable()) watchdog.join();
  }

  iox::roudi::IceOryxRouDiComponents components;
  HostRouDi roudi;
  std::mutex watchMutex;
  std::condition_variable watchChanged;
  bool watchStop = false;
  std::atomic<bool> stalled{false};
  std::thread watchdog;
};

EmbeddedRouDi::EmbeddedRouDi(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}

EmbeddedRouDi::~EmbeddedRouDi() {
  if (!m_impl) return;
  shm::log().info("stopping the embedded RouDi");
  m_impl->stopWatchdog();
  if (m_impl->roudi.sinceLastCycle() > kStalledAfter) {
    // Its discovery thread waits on a lock for good: joining it would keep this process forever.
    // Left running, with everything it uses, until the process exits.
    shm::log().warn("leaving the stuck RouDi's threads to the end of this process");
    (void)m_impl.release();
    g_ownedHere = false;
    return;
  }
  ::unlink(kHeartbeatPath.c_str());
  m_impl->roudi.stopThreads();
  if (const auto users = otherUsers(m_impl->components); !users.empty()) {
    // See the top of this file. Leaked on purpose: destroying it would destroy their ports.
    shm::log().warn("{} other process(es) still use this RouDi's shared memory ({}); leaving it to them "
                    "instead of destroying it",
                    users.size(), fmt::join(users, ", "));
    (void)m_impl.release();
    g_ownedHere = false;
    return;
  }
  if (g_registeredWith) {
    // This process's own runtime deregisters at exit from the RouDi that is gone now, and iceoryx
    // prints that failure (three lines, to std::cerr and its log) as if something had gone wrong.
    // Nothing it can say about RouDi from here on is news: quiet both for the rest of the process.
    iox::log::LogManager::GetLogManager().SetDefaultLogLevel(iox::log::LogLevel::kOff,
                                                             iox::log::LogLevelOutput::kHideLogLevel);
    std::atexit([] { std::cerr.rdbuf(nullptr); });
  }
}

Result<std::unique_ptr<EmbeddedRouDi>> EmbeddedRouDi::startIfAbsent(const TransportConfig& config) {
  std::lock_guard lock(g_startMutex);
  const auto deadline = std::chrono::steady_clock::now() + config.connectTimeout;
  if (g_ownedHere || rouDiLockHeld()) {
    // Someone runs it; wait (bounded) until it accepts runtimes, in case it is still starting.
    while (!rouDiReachable()) {
      if (std::chrono::steady_clock::now() >= deadline) {
        return fail(Errc::kUnavailable,
                    fmt::format("a RouDi holds {} but does not accept connections on {} within {} ms",
                                kRouDiLockPath, kRouDiSocketPath, config.connectTimeout.count()));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    shm::log().debug("a RouDi already runs on this host; attaching to it");
    return std::unique_ptr<EmbeddedRouDi>(new EmbeddedRouDi(nullptr));
  }

  // iceoryx maps its pools sparsely and would fail (SIGBUS) only when a chunk it cannot back is first
  // touched, long after start: refuse now, and say what to change, when /dev/shm is too small.
  if (struct statvfs shmFs{}; ::statvfs("/dev/shm", &shmFs) == 0) {
    const std::uint64_t needed = shmPoolBytes(config);
    const std::uint64_t available = std::uint64_t(shmFs.f_bavail) * shmFs.f_frsize;
    if (available < needed) {
      return fail(Errc::kUnavailable,
                  fmt::format("the shared-memory chunk pools for shm_sessions = {} need {} of /dev/shm, which "
                              "has {} free: lower shm_sessions (or shm_inline_payload_bytes), or enlarge "
                              "/dev/shm (e.g. docker --shm-size)",
                              config.shmSessions, formatBytes(needed), formatBytes(available)));
    }
  }
  shm::quietIceoryxLog();
  iox::mepoo::MePooConfig mempools;
  for (const auto& chunkClass : shmChunkClasses(config)) {
    mempools.addMemPool({chunkClass.bytes, chunkClass.count});
  }
  iox::RouDiConfig_t roudiConfig;
  const auto group = iox::posix::PosixGroup::getGroupOfCurrentProcess().getName();
  roudiConfig.m_sharedMemorySegments.push_back({group, group, mempools});
  roudiConfig.optimize();

  static CaptureBuf capture;  // static: RouDi's thread may still write after a failed start
  auto* const stdoutBuf = std::cout.rdbuf(&capture);
  // Creating the segments prints "Reserving N bytes in the shared memory [...]" to std::clog, four
  // lines of every node's start: kept for a debug log instead.
  static CaptureBuf reserving;
  auto* const clogBuf = std::clog.rdbuf(&reserving);
  auto impl = std::make_unique<Impl>(roudiConfig);
  std::clog.rdbuf(clogBuf);
  shm::log().debug("RouDi: {}", reserving.text());
  g_ownedHere = true;
  // RouDi binds its socket from its message thread, shortly after construction, then prints.
  while (!rouDiReachable() || !capture.contains("ready for clients")) {
    if (std::chrono::steady_clock::now() >= deadline) {
      std::cout.rdbuf(stdoutBuf);
      return fail(Errc::kUnavailable, fmt::format("the embedded RouDi did not open {} within {} ms",
                                                  kRouDiSocketPath, config.connectTimeout.count()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  std::cout.rdbuf(stdoutBuf);
  shm::log().info("started an embedded RouDi: chunk pools for {} shm sessions, {} of /dev/shm",
                  config.shmSessions, formatBytes(shmPoolBytes(config)));
  return std::unique_ptr<EmbeddedRouDi>(new EmbeddedRouDi(std::move(impl)));
}

}  // namespace flyt::transport
