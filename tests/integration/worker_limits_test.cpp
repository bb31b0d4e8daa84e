// A session's limits enforced by a real flyt-worker process (GPU stand-in): the memory limit
// changed live through the node's control pipe, idle release (exit status 4, the client sees the
// session gone), and a worker whose application was SIGKILLed ending within 3 s over shm and TCP.
// Workers are started with spawnWorker, as flyt-node does; the client side speaks the session
// protocol directly (transport::openSession, one call per batch).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <atomic>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "flyt/api/codec.hpp"
#include "flyt/api/methods.hpp"
#include "flyt/transport/config.hpp"
#include "flyt/transport/handshake.hpp"
#include "flyt/wire/session.capnp.h"
#include "node_workers.hpp"
#include "process_helpers.hpp"

namespace {

using namespace std::chrono_literals;
namespace fb = flyt::backend;
namespace ft = flyt::transport;
using flyt::api::Method;
using flyt::test::eventually;
using flyt::test::Process;
using Clock = std::chrono::steady_clock;

struct CallAnswer {
  cudaError_t error = cudaErrorUnknown;
  std::vector<std::byte> results;
};

// A flyt-worker serving one stand-in session on a loopback TCP port, and the client's channel to it.
class WorkerSession {
 public:
  explicit WorkerSession(fb::SessionLimits limits) {
    m_sessionId = ft::newSessionId();
    fb::WorkerLaunch launch{FLYT_WORKER_PATH, "tcp://127.0.0.1:0", m_sessionId, fb::ExecutorKind::kStandIn, "",
                            std::move(limits)};
    auto spawned = fb::spawnWorker(launch);
    if (!spawned) return;
    m_pid = spawned->pid();
    m_control = spawned->releaseControlFd();
    auto endpoint = spawned->awaitReady(5s);
    if (!endpoint) return;
    auto config = ft::transportConfigFromEnv();
    if (!config) return;
    auto session = ft::openSession(*endpoint, *config, "worker_limits_test", {}, m_sessionId);
    if (session) m_channel = std::move(session->channel);
  }
  ~WorkerSession() {
    m_channel.reset();
    if (m_control >= 0) ::close(m_control);
    if (m_pid > 0 && !m_reaped) {
      ::kill(m_pid, SIGKILL);
      ::waitpid(m_pid, nullptr, 0);
    }
  }
  WorkerSession(const WorkerSession&) = delete;
  WorkerSession& operator=(const WorkerSession&) = delete;

  [[nodiscard]] bool open() const { return m_channel != nullptr; }
  [[nodiscard]] int control() const { return m_control; }

  // One call in a batch of its own, waiting for its reply. nullopt when the channel failed.
  std::optional<CallAnswer> call(Method method, const std::vector<std::byte>& args) {
    auto sent = m_channel->send([&](capnp::MessageBuilder& builder) {
      auto batch = builder.initRoot<flyt::wire::Envelope>().initBatch();
      batch.setWantsReply(true);
      auto call = batch.initCalls(1)[0];
      call.setSequence(++m_sequence);
      call.setMethod(static_cast<std::uint32_t>(method));
      call.getArgs().setAs<capnp::Data>(kj::arrayPtr(reinterpret_cast<const capnp::byte*>(args.data()), args.size()));
    });
    if (!sent) return std::nullopt;
    auto incoming = m_channel->receive(5s);
    if (!incoming) return std::nullopt;
    auto results = incoming->root<flyt::wire::Envelope>().getReply().getResults();
    auto last = results[results.size() - 1];
    CallAnswer answer;
    answer.error = static_cast<cudaError_t>(last.getCudaError());
    if (last.hasResults()) {
      auto data = last.getResults().getAs<capnp::Data>();
      answer.results.assign(reinterpret_cast<const std::byte*>(data.begin()),
                            reinterpret_cast<const std::byte*>(data.end()));
    }
    return answer;
  }

  // cudaMalloc(bytes): the error and the pointer.
  std::pair<cudaError_t, std::uint64_t> malloc(std::uint64_t bytes) {
    std::vector<std::byte> args;
    flyt::api::ArgWriter(args).put(bytes);
    auto answer = call(Method::cudaMalloc, args);
    if (!answer) return {cudaErrorDevicesUnavailable, 0};
    std::uint64_t pointer = 0;
    if (answer->error == cudaSuccess) (void)flyt::api::ArgReader(answer->results).get(pointer);
    return {answer->error, pointer};
  }
  cudaError_t free(std::uint64_t pointer) {
    std::vector<std::byte> args;
    flyt::api::ArgWriter(args).put(pointer);
    auto answer = call(Method::cudaFree, args);
    return answer ? answer->error : cudaErrorDevicesUnavailable;
  }
  // cudaMemGetInfo: {free, total}, or {0, 0} when it failed.
  std::pair<std::uint64_t, std::uint64_t> memInfo() {
    auto answer = call(Method::cudaMemGetInfo, {});
    std::uint64_t free = 0, total = 0;
    if (answer && answer->error == cudaSuccess) {
      flyt::api::ArgReader reader(answer->results);
      (void)reader.get(free);
      (void)reader.get(total);
    }
    return {free, total};
  }

  // The worker's wait status once it exits within `timeout`.
  std::optional<int> waitExit(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      int status = 0;
      if (::waitpid(m_pid, &status, WNOHANG) == m_pid) {
        m_reaped = true;
        return status;
      }
      std::this_thread::sleep_for(10ms);
    }
    return std::nullopt;
  }

 private:
  std::uint64_t m_sessionId = 0;
  pid_t m_pid = -1;
  bool m_reaped = false;
  int m_control = -1;
  std::unique_ptr<ft::Channel> m_channel;
  std::uint64_t m_sequence = 0;
};

constexpr std::uint64_t kMiB = 1 << 20;

TEST(WorkerLimits, MemoryLimitChangesLiveThroughTheControlPipe) {
  fb::SessionLimits limits;
  limits.memoryBytes = 1 * kMiB;
  WorkerSession session(limits);
  ASSERT_TRUE(session.open());
  EXPECT_EQ(session.memInfo(), std::make_pair(kMiB, kMiB));
  EXPECT_EQ(session.malloc(2 * kMiB).first, cudaErrorMemoryAllocation);

  ASSERT_TRUE(fb::sendMemoryLimit(session.control(), 4 * kMiB).has_value());
  ASSERT_TRUE(eventually([&] { return session.memInfo().second == 4 * kMiB; }, 2s));
  auto [grown, big] = session.malloc(2 * kMiB);
  ASSERT_EQ(grown, cudaSuccess);
  EXPECT_EQ(session.memInfo(), std::make_pair(2 * kMiB, 4 * kMiB));

  // Shrunk below what is in use: the allocation stays, nothing new fits until it is freed.
  ASSERT_TRUE(fb::sendMemoryLimit(session.control(), 1 * kMiB).has_value());
  ASSERT_TRUE(eventually([&] { return session.memInfo().second == kMiB; }, 2s));
  EXPECT_EQ(session.memInfo().first, 0u);
  EXPECT_EQ(session.malloc(256).first, cudaErrorMemoryAllocation);
  EXPECT_EQ(session.free(big), cudaSuccess);
  EXPECT_EQ(session.malloc(kMiB).first, cudaSuccess);

  // 0: unlimited (the stand-in's own 16 GiB).
  ASSERT_TRUE(fb::sendMemoryLimit(session.control(), 0).has_value());
  ASSERT_TRUE(eventually([&] { return session.memInfo().second > 4 * kMiB; }, 2s));
  EXPECT_EQ(session.malloc(64 * kMiB).first, cudaSuccess);
}

TEST(WorkerLimits, GarbageOnTheControlPipeAndItsClosingLeaveTheSessionRunning) {
  fb::SessionLimits limits;
  limits.memoryBytes = 1 * kMiB;
  WorkerSession session(limits);
  ASSERT_TRUE(session.open());
  const std::string garbage = "sm-percent 50\nmemory-limit lots\n" + std::string(300, 'x') + "\n";
  ASSERT_EQ(::write(session.control(), garbage.data(), garbage.size()), ssize_t(garbage.size()));
  ASSERT_TRUE(fb::sendMemoryLimit(session.control(), 2 * kMiB).has_value());
  ASSERT_TRUE(eventually([&] { return session.memInfo().second == 2 * kMiB; }, 2s));
  ::close(session.control());
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(session.malloc(kMiB).first, cudaSuccess);
  EXPECT_EQ(session.memInfo().second, 2 * kMiB);
}

TEST(WorkerLimits, IdleSessionIsReleasedWithExitStatus4AndTheClientSeesItGone) {
  fb::SessionLimits limits;
  limits.idleTimeoutS = 1;
  WorkerSession session(limits);
  ASSERT_TRUE(session.open());
  ASSERT_EQ(session.malloc(kMiB).first, cudaSuccess);  // activity restarts the clock
  const auto start = Clock::now();
  auto status = session.waitExit(3s);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 4) << fb::describeWaitStatus(*status);
  EXPECT_GE(Clock::now() - start, 900ms);
  EXPECT_FALSE(session.call(Method::cudaMemGetInfo, {}).has_value());
}

TEST(WorkerLimits, SendMemoryLimitToAWorkerThatIsGoneFailsWithoutBlocking) {
  fb::SessionLimits limits;
  limits.idleTimeoutS = 1;
  WorkerSession session(limits);
  ASSERT_TRUE(session.open());
  ASSERT_TRUE(session.waitExit(3s).has_value());
  ::signal(SIGPIPE, SIG_IGN);  // sendMemoryLimit's contract, as in flyt-node
  auto sent = fb::sendMemoryLimit(session.control(), kMiB);
  ASSERT_FALSE(sent.has_value());
  EXPECT_EQ(sent.error().code, ft::Errc::kUnavailable);
}

// A flyt-node on a unique shm name and a free loopback port (stand-in executor).
struct Node {
  std::unique_ptr<Process> process;
  std::string shm, tcp;
  Node() {
    static std::atomic<int> counter{0};
    process = std::make_unique<Process>(std::vector<std::string>{
        FLYT_NODE_PATH, "--shm", "flyt-wl-" + std::to_string(::getpid()) + "-" + std::to_string(counter++), "--tcp",
        "127.0.0.1:0", "--executor", "standin", "--log", "info"});
  }
  bool ready() {
    const std::regex line(R"(flyt-node: serving (shm://\S+) and (tcp://\S+))");
    std::smatch match;
    if (!eventually([&] { auto text = process->stderrText(); return std::regex_search(text, match, line); }, 10s)) {
      return false;
    }
    shm = match[1];
    tcp = match[2];
    return true;
  }
  pid_t workerOf(const std::string& sessionHex) const {
    const std::regex started("session " + sessionHex + R"( started: .* worker pid (\d+) at)");
    std::smatch match;
    const std::string text = process->stderrText();
    return std::regex_search(text, match, started) ? std::stoi(match[1]) : -1;
  }
};

TEST(WorkerLimits, WorkerEndsWithin3sOfItsApplicationsSigkillOverShmAndTcp) {
  flyt::test::holdHostRouDiLock();
  Node node;
  ASSERT_TRUE(node.ready()) << node.process->stderrText();
  for (const std::string& server : {node.shm, node.tcp}) {
    SCOPED_TRACE(server);
    Process client({FLYT_SESSION_CLIENT_PATH, server, "--hold"});
    auto line = client.readLine(10s);
    ASSERT_TRUE(line.has_value()) << client.stderrText();
    std::smatch match;
    ASSERT_TRUE(std::regex_search(*line, match, std::regex("session ([0-9a-f]{16})")));
    const std::string sessionHex = match[1];
    pid_t worker = -1;
    ASSERT_TRUE(eventually([&] { return (worker = node.workerOf(sessionHex)) > 0; }, 5s));
    const auto killed = Clock::now();
    client.signal(SIGKILL);
    ASSERT_TRUE(client.wait(2s).has_value());
    EXPECT_TRUE(eventually([&] { return !flyt::test::processExists(worker); }, 3s))
        << "worker pid " << worker << " still there after 3 s\n" << node.process->stderrText();
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed);
    std::printf("%s: worker gone %lld ms after SIGKILL of its application\n", server.c_str(),
                static_cast<long long>(took.count()));
  }
}

}  // namespace
