// flyt-node as a real process: sessions over shm and TCP, each redirected to its own flyt-worker;
// workers reaped when their client dies; SIGTERM stops node and workers and leaves nothing behind.
// Clients are session_client processes (transport::openSession + Goodbye); the workers run the
// GPU stand-in (--executor standin), so no GPU is needed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <regex>
#include <set>
#include <string>
#include <thread>

#include "process_helpers.hpp"

namespace {

using namespace std::chrono_literals;
using flyt::test::eventually;
using flyt::test::Process;

// A flyt-node on a unique shm name and a free loopback port, logging at info to its stderr.
struct NodeUnderTest {
  std::string shmName;
  std::string shm;
  std::string tcp;
  std::unique_ptr<Process> process;

  explicit NodeUnderTest(std::vector<std::string> env = {}) {
    static std::atomic<int> counter{0};
    shmName = "flyt-it-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    process = std::make_unique<Process>(
        std::vector<std::string>{FLYT_NODE_PATH, "--shm", shmName, "--tcp", "127.0.0.1:0", "--executor",
                                 "standin", "--log", "info"},
        std::move(env));
  }

  // Waits for "flyt-node: serving shm://... and tcp://..." on stderr.
  [[nodiscard]] bool ready() {
    const std::regex line(R"(flyt-node: serving (shm://\S+) and (tcp://\S+))");
    std::smatch match;
    const bool seen = eventually(
        [&] {
          const std::string text = process->stderrText();
          return std::regex_search(text, match, line);
        },
        10s);
    if (!seen) return false;
    shm = match[1];
    tcp = match[2];
    return true;
  }

  [[nodiscard]] std::string log() const { return process->stderrText(); }

  // The worker pid the node logged for `sessionHex`, or -1.
  [[nodiscard]] pid_t workerOf(const std::string& sessionHex) const {
    const std::regex started("session " + sessionHex + R"( started: .* worker pid (\d+) at)");
    std::smatch match;
    const std::string text = log();
    return std::regex_search(text, match, started) ? std::stoi(match[1]) : -1;
  }

  [[nodiscard]] bool logged(const std::string& text) const {
    return log().find(text) != std::string::npos;
  }
};

// A session_client holding its session open until its stdin closes.
struct Client {
  std::unique_ptr<Process> process;
  std::string sessionHex;
  std::string endpoint;

  explicit Client(const std::string& server, std::vector<std::string> env = {})
      : process(std::make_unique<Process>(
            std::vector<std::string>{FLYT_SESSION_CLIENT_PATH, server, "--hold"}, std::move(env))) {}

  // Reads "session <hex> <endpoint>".
  [[nodiscard]] bool opened() {
    auto line = process->readLine(10s);
    if (!line) return false;
    std::smatch match;
    if (!std::regex_match(*line, match, std::regex(R"(session ([0-9a-f]{16}) (\S+))"))) return false;
    sessionHex = match[1];
    endpoint = match[2];
    return true;
  }
};

// Connects to a TCP endpoint and says nothing: a stalled client in the middle of a handshake.
int silentTcpClient(const std::string& tcp) {
  const auto colon = tcp.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(std::uint16_t(std::stoi(tcp.substr(colon + 1))));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  return fd;
}

TEST(FlytNode, ServesShmAndTcpSessionsConcurrentlyEachThroughItsOwnWorker) {
  flyt::test::holdHostRouDiLock();
  NodeUnderTest node;
  ASSERT_TRUE(node.ready()) << node.log();
  const int stalled = silentTcpClient(node.tcp);  // must not hold up the sessions below

  Client overShm(node.shm);
  Client overTcp(node.tcp);
  ASSERT_TRUE(overShm.opened()) << overShm.process->stderrText() << node.log();
  ASSERT_TRUE(overTcp.opened()) << overTcp.process->stderrText() << node.log();
  EXPECT_EQ(overShm.endpoint, "shm://" + node.shmName + "-w" + overShm.sessionHex);
  EXPECT_TRUE(overTcp.endpoint.starts_with("tcp://127.0.0.1:")) << overTcp.endpoint;
  EXPECT_NE(overTcp.endpoint, node.tcp);

  // Both sessions are open at once, each with a live worker of its own.
  const pid_t shmWorker = node.workerOf(overShm.sessionHex);
  const pid_t tcpWorker = node.workerOf(overTcp.sessionHex);
  ASSERT_GT(shmWorker, 0) << node.log();
  ASSERT_GT(tcpWorker, 0) << node.log();
  EXPECT_NE(shmWorker, tcpWorker);
  EXPECT_TRUE(flyt::test::processExists(shmWorker));
  EXPECT_TRUE(flyt::test::processExists(tcpWorker));
  EXPECT_TRUE(node.logged("client 'session_client'"));

  for (Client* client : {&overShm, &overTcp}) {
    client->process->closeStdin();  // says Goodbye
    auto status = client->process->wait(5s);
    ASSERT_TRUE(status.has_value());
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << client->process->stderrText();
  }
  for (Client* client : {&overShm, &overTcp}) {
    EXPECT_TRUE(eventually([&] { return node.logged("session " + client->sessionHex + " ended"); },
                           5s))
        << node.log();
  }
  EXPECT_TRUE(node.logged("worker pid " + std::to_string(shmWorker) + " exited with status 0"))
      << node.log();
  EXPECT_TRUE(node.logged("worker pid " + std::to_string(tcpWorker) + " exited with status 0"))
      << node.log();
  ::close(stalled);
}

// `flyt run --server TCP -- python3` calling cudaGetDeviceCount through Flyt's runtime, with
// FLYT_AUTH_TOKEN set to `token` ("" = unset). Returns the cudaError_t it printed, or -1, and its stderr.
std::pair<int, std::string> cudaCallThroughFlyt(const std::string& tcp, const std::string& token) {
  Process flyt({FLYT_TOOL_PATH, "run", "--server", tcp, "--", "/usr/bin/python3", "-c",
                "import ctypes; n = ctypes.c_int(); "
                "print(ctypes.CDLL('libcudart.so.13').cudaGetDeviceCount(ctypes.byref(n)))"},
               {"FLYT_SERVER=", "FLYT_AUTH_TOKEN=" + token});
  const std::string out = flyt.readAll(20s);
  (void)flyt.wait(20s);
  std::smatch match;
  const int error = std::regex_search(out, match, std::regex(R"((\d+)\s*$)")) ? std::stoi(match[1]) : -1;
  return {error, flyt.stderrText()};
}

TEST(FlytNode, AdmitsTcpClientsOnlyWithItsAuthTokenAndShmClientsAsBefore) {
  if (::access("/usr/bin/python3", X_OK) != 0) GTEST_SKIP() << "needs /usr/bin/python3 to call the CUDA runtime";
  flyt::test::holdHostRouDiLock();
  const std::string token = "integration-test-token-0123456789";
  NodeUnderTest node({"FLYT_AUTH_TOKEN=" + token});
  ASSERT_TRUE(node.ready()) << node.log();
  EXPECT_TRUE(node.logged("must prove they hold auth_token")) << node.log();

  auto [admitted, admittedErr] = cudaCallThroughFlyt(node.tcp, token);
  EXPECT_EQ(admitted, 0) << admittedErr << node.log();
  EXPECT_TRUE(eventually([&] { return node.logged("started: client 'python3'"); }, 5s)) << node.log();

  auto [missing, missingErr] = cudaCallThroughFlyt(node.tcp, "");
  EXPECT_NE(missing, 0) << missingErr;
  EXPECT_NE(missingErr.find("requires authentication"), std::string::npos) << missingErr;
  EXPECT_NE(missingErr.find("FLYT_AUTH_TOKEN"), std::string::npos) << missingErr;
  EXPECT_TRUE(eventually([&] { return node.logged("missing token"); }, 5s)) << node.log();

  auto [wrong, wrongErr] = cudaCallThroughFlyt(node.tcp, "not-the-token-but-long-enough");
  EXPECT_NE(wrong, 0) << wrongErr;
  EXPECT_NE(wrongErr.find("authentication failed: wrong or missing token (auth_token)"), std::string::npos)
      << wrongErr;
  EXPECT_TRUE(eventually([&] { return node.logged("wrong token"); }, 5s)) << node.log();
  EXPECT_TRUE(node.logged("<- 127.0.0.1:")) << "the refusal names no peer address: " << node.log();

  Client overShm(node.shm);  // same host, guarded by file permissions: no token asked
  ASSERT_TRUE(overShm.opened()) << overShm.process->stderrText() << node.log();
  overShm.process->closeStdin();
  EXPECT_TRUE(overShm.process->wait(5s).has_value());
}

// shm_sessions sizes the host's chunk pools and caps the node's shared-memory sessions: one more is
// refused as busy, the client asks again until its connect timeout and then fails with a message
// naming the key; TCP sessions are not counted; a client that waits gets the first place freed.
TEST(FlytNode, RefusesSharedMemorySessionsBeyondShmSessionsWithAClearMessage) {
  flyt::test::holdHostRouDiLock();
  NodeUnderTest node({"FLYT_SHM_SESSIONS=2"});
  ASSERT_TRUE(node.ready()) << node.log();
  EXPECT_TRUE(node.logged("chunk pools for 2 shm sessions")) << node.log();
  Client first(node.shm);
  Client second(node.shm);
  ASSERT_TRUE(first.opened()) << first.process->stderrText() << node.log();
  ASSERT_TRUE(second.opened()) << second.process->stderrText() << node.log();

  Client refused(node.shm, {"FLYT_CONNECT_TIMEOUT_MS=1000"});
  EXPECT_FALSE(refused.opened());
  EXPECT_TRUE(refused.process->wait(10s).has_value());
  EXPECT_NE(refused.process->stderrText().find("busy: server refused the session: this node already serves 2 "
                                               "shared-memory sessions"),
            std::string::npos)
      << refused.process->stderrText();
  EXPECT_NE(refused.process->stderrText().find("shm_sessions"), std::string::npos);
  EXPECT_TRUE(node.logged("2 shared-memory sessions run (shm_sessions)")) << node.log();

  Client overTcp(node.tcp);
  ASSERT_TRUE(overTcp.opened()) << overTcp.process->stderrText() << node.log();

  Client waiting(node.shm);  // default connect timeout (10 s): keeps asking
  std::this_thread::sleep_for(300ms);
  first.process->closeStdin();
  ASSERT_TRUE(first.process->wait(5s).has_value());
  ASSERT_TRUE(waiting.opened()) << waiting.process->stderrText() << node.log();
  for (Client* client : {&second, &overTcp, &waiting}) {
    client->process->closeStdin();
    EXPECT_TRUE(client->process->wait(5s).has_value());
  }
}

// A RouDi that stops completing cycles (here: its node is SIGSTOPped; in the field: stuck on a port
// lock of a process killed inside a shared-memory call) would never answer iceoryx's requests, which
// wait without a bound. A new shm client fails at once with a message instead of hanging, and is
// served again once RouDi runs.
TEST(FlytNode, NewShmClientsFailFastWithAMessageWhileTheHostsRouDiIsStuck) {
  flyt::test::holdHostRouDiLock();
  NodeUnderTest node;
  ASSERT_TRUE(node.ready()) << node.log();
  ASSERT_EQ(::kill(node.process->pid(), SIGSTOP), 0);
  std::this_thread::sleep_for(4500ms);
  const auto start = std::chrono::steady_clock::now();
  Client refused(node.shm);
  EXPECT_FALSE(refused.opened());
  EXPECT_TRUE(refused.process->wait(5s).has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_NE(refused.process->stderrText().find("has not completed a cycle for"), std::string::npos)
      << refused.process->stderrText();
  EXPECT_NE(refused.process->stderrText().find("Restart flyt-node"), std::string::npos);
  ASSERT_EQ(::kill(node.process->pid(), SIGCONT), 0);

  std::this_thread::sleep_for(1500ms);  // a fresh heartbeat
  Client served(node.shm);
  ASSERT_TRUE(served.opened()) << served.process->stderrText() << node.log();
  served.process->closeStdin();
  EXPECT_TRUE(served.process->wait(5s).has_value());
}

TEST(FlytNode, ReapsTheWorkerOfAClientKilledMidSession) {
  flyt::test::holdHostRouDiLock();
  NodeUnderTest node;
  ASSERT_TRUE(node.ready()) << node.log();
  for (const std::string& server : {node.shm, node.tcp}) {
    SCOPED_TRACE(server);
    Client client(server);
    ASSERT_TRUE(client.opened()) << client.process->stderrText() << node.log();
    const pid_t worker = node.workerOf(client.sessionHex);
    ASSERT_GT(worker, 0) << node.log();

    client.process->signal(SIGKILL);
    ASSERT_TRUE(client.process->wait(2s).has_value());
    EXPECT_TRUE(eventually(
        [&] {
          return node.logged("session " + client.sessionHex + " ended") &&
                 !flyt::test::processExists(worker);
        },
        5s))
        << node.log();
  }
}

TEST(FlytNode, SigtermStopsTheNodeAndItsWorkersLeavingNothingBehind) {
  flyt::test::holdHostRouDiLock();
  const auto shmBefore = flyt::test::shmFiles("");
  NodeUnderTest node;
  ASSERT_TRUE(node.ready()) << node.log();
  Client overShm(node.shm);
  Client overTcp(node.tcp);
  ASSERT_TRUE(overShm.opened()) << overShm.process->stderrText() << node.log();
  ASSERT_TRUE(overTcp.opened()) << overTcp.process->stderrText() << node.log();
  const std::vector<pid_t> workers = {node.workerOf(overShm.sessionHex),
                                      node.workerOf(overTcp.sessionHex)};

  node.process->signal(SIGTERM);
  auto status = node.process->wait(5s);
  ASSERT_TRUE(status.has_value()) << "flyt-node did not stop within 5 s\n" << node.log();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << node.log();
  for (pid_t worker : workers) {
    EXPECT_GT(worker, 0);
    EXPECT_FALSE(flyt::test::processExists(worker)) << "worker " << worker << " outlived the node";
  }
  EXPECT_TRUE(flyt::test::processesWithArgument(node.shmName + "-w").empty());  // no shm worker
  // Nothing new in /dev/shm from the node, its workers or its RouDi; another process's data region
  // (flyt-region-<its pid>-...) may come and go meanwhile.
  // The RouDi's own memory (iceoryx_mgmt and the user segment) stays only when the clients, still
  // alive here, used it when it stopped: destroying it would destroy their ports (see
  // transport/src/embedded_roudi.cpp). Then the node says so, and the next RouDi reclaims it.
  std::set<std::string> before(shmBefore.begin(), shmBefore.end());
  const bool rouDiLeftToClients = node.logged("still use this RouDi's shared memory");
  for (const auto& name : flyt::test::shmFiles("")) {
    if (before.contains(name) || name.starts_with("flyt-region-")) continue;
    if (rouDiLeftToClients && !name.starts_with("flyt")) continue;
    ADD_FAILURE() << "/dev/shm/" << name << " was left behind";
  }
  EXPECT_TRUE(flyt::test::shmFiles("flyt-" + node.shmName).empty());
}

TEST(FlytNode, RefusesToStartWithoutItsWorkerExecutable) {
  Process node({FLYT_NODE_PATH, "--shm", "flyt-it-noworker", "--tcp", "none", "--worker",
                "/nonexistent/flyt-worker"});
  auto status = node.wait(10s);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0);
  EXPECT_NE(node.stderrText().find("/nonexistent/flyt-worker"), std::string::npos)
      << node.stderrText();
}

}  // namespace
