// The cluster end to end, with real processes only: a flyt-orchestrator on a real SQLite file, two
// flyt-node processes that register with it (their workers run the GPU stand-in, the one test
// double: no GPU in CI), applications that are real CUDA programs (cluster_client.cu) started by
// `flyt run --orchestrator`, and flytctl. What the applications report (quota as total memory,
// SM share as multiProcessorCount, cudaErrorMemoryAllocation beyond the quota) comes from the
// worker, through the grant the orchestrator signed and the node checked.
#include <signal.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>
#include <string>

#include "flyt/transport/config.hpp"
#include "flyt/transport/grant.hpp"
#include "flyt/transport/handshake.hpp"
#include "flyt/transport/orchestrator_client.hpp"
#include "process_helpers.hpp"

namespace {

using namespace std::chrono_literals;
using flyt::test::eventually;
using flyt::test::Process;
namespace ft = flyt::transport;

constexpr std::uint64_t kMiB = 1ULL << 20;

std::string uniqueName(const std::string& stem) {
  static std::atomic<int> counter{0};
  return fmt::format("{}-{}-{}", stem, ::getpid(), counter++);
}

// A free loopback port (so that an orchestrator can be restarted at the same address).
int freePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t length = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// JSON without white space, so that tests can look for `"key":"value"` whatever the layout.
std::string compact(const std::string& json) {
  std::string out;
  bool inString = false;
  for (std::size_t i = 0; i < json.size(); ++i) {
    const char c = json[i];
    if (c == '"' && (i == 0 || json[i - 1] != '\\')) inString = !inString;
    if (!inString && std::isspace(static_cast<unsigned char>(c))) continue;
    out += c;
  }
  return out;
}

struct Orchestrator {
  std::string dir;
  std::string address;  // 127.0.0.1:PORT
  std::unique_ptr<Process> process;

  // `settings`: more [orchestrator] keys (the role tokens).
  explicit Orchestrator(std::string directory, const std::string& settings = "") : dir(std::move(directory)) {
    address = fmt::format("127.0.0.1:{}", freePort());
    std::ofstream(dir + "/orchestrator.toml") << "[orchestrator]\n"
                                                 "heartbeat_ms = 200\n"
                                                 "node_timeout_ms = 1500\n"
                                                 "grant_ttl_ms = 1500\n"
                                              << settings;
  }
  [[nodiscard]] bool start() {
    process = std::make_unique<Process>(std::vector<std::string>{
        FLYT_ORCHESTRATOR_PATH, "--config", dir + "/orchestrator.toml", "--database", dir + "/state.db",
        "--listen", address, "--ready-fd", "1", "--log", "debug"});
    auto line = process->readLine(10s);
    return line.has_value() && line->find(address.substr(address.find(':'))) != std::string::npos;
  }
  [[nodiscard]] std::string log() const { return process ? process->stderrText() : ""; }
};

struct Node {
  std::string name;
  std::unique_ptr<Process> process;

  Node(const std::string& nodeName, const std::string& orchestrator, std::vector<std::string> extraArgs = {},
       std::vector<std::string> env = {})
      : name(nodeName) {
    std::vector<std::string> argv{FLYT_NODE_PATH, "--name", name, "--shm", uniqueName("fc"), "--tcp", "127.0.0.1:0",
                                  "--executor", "standin", "--orchestrator", orchestrator, "--log", "info"};
    argv.insert(argv.end(), extraArgs.begin(), extraArgs.end());
    process = std::make_unique<Process>(std::move(argv), std::move(env));
  }
  [[nodiscard]] bool registered() const {
    return eventually([&] { return log().find("registered with the orchestrator") != std::string::npos; }, 10s);
  }
  [[nodiscard]] std::string log() const { return process->stderrText(); }
};

struct CommandResult {
  int status = -1;
  std::string out;
  std::string err;
};

CommandResult flytctl(const std::string& orchestrator, std::vector<std::string> args) {
  std::vector<std::string> argv = {FLYTCTL_PATH, "--orchestrator", orchestrator};
  argv.insert(argv.end(), args.begin(), args.end());
  Process process(argv);
  CommandResult result;
  result.out = process.readAll(15s);
  auto status = process.wait(15s);
  result.status = status && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
  result.err = process.stderrText();
  return result;
}

// A CUDA application in a tenant, started by `flyt run --orchestrator`.
struct App {
  std::unique_ptr<Process> process;
  std::string ready;  // its "ready ..." line

  App(const std::string& orchestrator, const std::string& tenant, const std::string& token) {
    process = std::make_unique<Process>(
        std::vector<std::string>{FLYT_TOOL_PATH, "run", "--orchestrator", orchestrator, "--tenant", tenant, "--token",
                                 token, "--", FLYT_CLUSTER_CLIENT_PATH},
        std::vector<std::string>{"FLYT_LOG=info"});
  }
  // Ends the application the way it ends by itself (stdin closed: it frees, syncs and exits), so
  // that no program, worker or iceoryx port outlives the test; a SIGKILL only if it hangs.
  ~App() {
    process->closeStdin();
    (void)process->wait(5s);
  }
  App(const App&) = delete;
  App& operator=(const App&) = delete;

  [[nodiscard]] bool started() {
    auto line = process->readLine(15s);
    if (!line || !line->starts_with("ready ")) return false;
    ready = *line;
    return true;
  }
  [[nodiscard]] std::uint64_t field(const std::string& key) const {
    std::smatch match;
    if (!std::regex_search(ready, match, std::regex(key + R"(=(\d+))"))) return 0;
    return std::stoull(match[1]);
  }
  [[nodiscard]] std::string ask(const std::string& line) {
    if (!process->writeLine(line)) return "";
    return process->readLine(10s).value_or("");
  }
};

// What every cluster test holds: its directory, an orchestrator, nodes and applications, all ended
// in TearDown (SIGTERM for nodes, as a service manager would: a node stops its workers; a SIGKILLed
// one would leave them running).
class ClusterProcesses : public ::testing::Test {
 protected:
  void makeDirectory(const std::string& prefix) {
    flyt::test::holdHostRouDiLock();
    dir = ::testing::TempDir() + "/" + uniqueName(prefix);
    std::filesystem::create_directories(dir);
  }
  void TearDown() override {
    apps.clear();
    for (auto& node : nodes) node->process->signal(SIGTERM);
    for (auto& node : nodes) (void)node->process->wait(10s);
    nodes.clear();
    orchestrator.reset();
    if (!dir.empty()) std::filesystem::remove_all(dir);
  }
  std::string debugText() {
    std::string text = "--- orchestrator\n" + orchestrator->log();
    for (auto& node : nodes) text += "--- " + node->name + "\n" + node->log();
    for (auto& app : apps) text += "--- app\n" + app->process->stderrText();
    return text;
  }

  std::string dir;
  std::unique_ptr<Orchestrator> orchestrator;
  std::vector<std::unique_ptr<Node>> nodes;
  std::vector<std::unique_ptr<App>> apps;
};

class Cluster : public ClusterProcesses {
 protected:
  void SetUp() override {
    makeDirectory("flyt-cluster");
    orchestrator = std::make_unique<Orchestrator>(dir);
    ASSERT_TRUE(orchestrator->start()) << orchestrator->log();
    // One after the other: the first node starts the host's RouDi, the second attaches to it (two
    // nodes starting RouDi at the same instant race in iceoryx).
    for (const char* name : {"node-a", "node-b"}) {
      nodes.push_back(std::make_unique<Node>(name, orchestrator->address));
      ASSERT_TRUE(nodes.back()->registered()) << nodes.back()->log() << orchestrator->log();
    }
  }
  std::string addTenant(const std::string& name, int smPercent, const std::string& memory, int maxSessions = 1) {
    auto added = flytctl(orchestrator->address, {"--json", "tenant", "add", name, "--sm", std::to_string(smPercent),
                                                 "--memory", memory, "--max-sessions", std::to_string(maxSessions)});
    EXPECT_EQ(added.status, 0) << added.out << added.err;
    std::smatch match;
    const std::string text = compact(added.out);
    if (!std::regex_search(text, match, std::regex(R"re("token":"([^"]+)")re"))) {
      ADD_FAILURE() << "no token in: " << added.out;
      return "";
    }
    return match[1];
  }
  App& startApp(const std::string& tenant, const std::string& token) {
    apps.push_back(std::make_unique<App>(orchestrator->address, tenant, token));
    return *apps.back();
  }
  std::string sessionsJson() { return compact(flytctl(orchestrator->address, {"--json", "session", "list"}).out); }
};

TEST_F(Cluster, PlacesSessionsBestFitOnBothNodesEnforcesTheQuotaAndRefusesWhenFull) {
  const std::string token = addTenant("big", 60, "256MiB", 3);
  App& first = startApp("big", token);
  ASSERT_TRUE(first.started()) << debugText();
  // The worker reports the grant, not the (stand-in) GPU.
  EXPECT_EQ(first.field("total"), 256 * kMiB) << first.ready;
  EXPECT_GE(first.field("sms"), 1u);
  EXPECT_LE(first.field("sms"), 132u * 60 / 100) << first.ready;  // the stand-in has 132 SMs
  App& second = startApp("big", token);
  ASSERT_TRUE(second.started()) << debugText();
  const std::string sessions = sessionsJson();
  EXPECT_NE(sessions.find(R"("node":"node-a")"), std::string::npos) << sessions;
  EXPECT_NE(sessions.find(R"("node":"node-b")"), std::string::npos) << sessions;

  // Each GPU has 40 % of its SMs left: a third 60 % session fits nowhere, and says why.
  App& third = startApp("big", token);
  EXPECT_FALSE(third.started());
  auto status = third.process->wait(15s);
  ASSERT_TRUE(status.has_value());
  EXPECT_NE(*status, 0);
  EXPECT_NE(third.process->stderrText().find("no GPU has"), std::string::npos) << third.process->stderrText();

  // The quota is enforced in the worker; another tenant on the same GPU is unaffected.
  EXPECT_EQ(first.ask("alloc 200000000"), "alloc 200000000 cudaSuccess");
  EXPECT_EQ(first.ask("alloc 100000000"), "alloc 100000000 cudaErrorMemoryAllocation");
  const std::string smallToken = addTenant("small", 20, "128MiB");
  App& small = startApp("small", smallToken);
  ASSERT_TRUE(small.started()) << debugText();
  EXPECT_EQ(small.ask("alloc 100000000"), "alloc 100000000 cudaSuccess");
  EXPECT_EQ(first.ask("alloc 50000000"), "alloc 50000000 cudaSuccess");
}

TEST_F(Cluster, LiveMemoryResizeAndSessionKillReachTheRunningApplication) {
  const std::string token = addTenant("vm", 50, "128MiB");
  App& app = startApp("vm", token);
  ASSERT_TRUE(app.started()) << debugText();
  EXPECT_EQ(app.ask("alloc 200000000"), "alloc 200000000 cudaErrorMemoryAllocation");

  auto set = flytctl(orchestrator->address, {"tenant", "set", "vm", "--memory", "512MiB"});
  ASSERT_EQ(set.status, 0) << set.out << set.err;
  EXPECT_TRUE(eventually([&] { return app.ask("info").starts_with(fmt::format("info total={}", 512 * kMiB)); }, 5s))
      << debugText();
  EXPECT_EQ(app.ask("alloc 200000000"), "alloc 200000000 cudaSuccess");

  std::smatch match;
  const std::string sessions = sessionsJson();
  ASSERT_TRUE(std::regex_search(sessions, match, std::regex(R"re("(?:sessionId|id)":"?([0-9a-fx]+))re")))
      << sessions;
  auto killed = flytctl(orchestrator->address, {"session", "kill", match[1]});
  ASSERT_EQ(killed.status, 0) << killed.out << killed.err;
  // The worker is gone: the application's next call fails (and never hangs).
  EXPECT_TRUE(eventually([&] { return app.ask("info").find("cudaErrorDevicesUnavailable") != std::string::npos; }, 5s))
      << debugText();
  EXPECT_TRUE(eventually([&] { return sessionsJson().find("vm") == std::string::npos; }, 5s)) << sessionsJson();
}

TEST_F(Cluster, SigkilledApplicationReleasesItsGrantWithinFiveSeconds) {
  const std::string token = addTenant("vm", 100, "64MiB");
  App& app = startApp("vm", token);
  ASSERT_TRUE(app.started()) << debugText();
  ASSERT_TRUE(eventually([&] { return sessionsJson().find(R"("state":"active")") != std::string::npos; }, 5s))
      << sessionsJson();
  const auto pid = static_cast<pid_t>(app.field("pid"));
  ASSERT_GT(pid, 0);
  const auto killedAt = std::chrono::steady_clock::now();
  ::kill(pid, SIGKILL);
  EXPECT_TRUE(eventually([&] { return sessionsJson().find(R"("tenant":"vm")") == std::string::npos; }, 5s))
      << sessionsJson() << debugText();
  EXPECT_LT(std::chrono::steady_clock::now() - killedAt, 5s);
  // The whole GPU is free again: another 100 % session fits at once.
  App& again = startApp("vm", token);
  EXPECT_TRUE(again.started()) << debugText();
}

TEST_F(Cluster, NodesRefuseForgedExpiredReusedAndMissingGrants) {
  const std::string token = addTenant("vm", 25, "64MiB", 4);
  const ft::SessionRequestInfo request{"vm", token, "grant-test", "another-host", 1};
  auto config = ft::transportConfigFromEnv();
  ASSERT_TRUE(config);

  // A genuine grant opens a session once; the same grant again is refused.
  auto placement = ft::requestPlacement(orchestrator->address, request, 5s);
  ASSERT_TRUE(placement) << placement.error().describe();
  ASSERT_FALSE(placement->endpoints.empty());
  const std::string endpoint = placement->endpoints.front();
  EXPECT_TRUE(endpoint.starts_with("tcp://")) << endpoint;  // another host: no shared memory
  {
    auto opened = ft::openSession(endpoint, *config, "grant-test", placement->signedGrant, placement->sessionId);
    ASSERT_TRUE(opened) << opened.error().describe() << debugText();
  }
  auto reused = ft::openSession(endpoint, *config, "grant-test", placement->signedGrant, placement->sessionId);
  ASSERT_FALSE(reused);

  // Signed by another key: refused.
  auto forger = ft::GrantSigner::generate();
  ASSERT_TRUE(forger);
  ft::GrantInfo forged{placement->sessionId + 1, "vm", placement->node, placement->gpuUuid, 100, 1ULL << 40,
                       ft::unixMillis(), ft::unixMillis() + 60000, 0};
  auto forgedBytes = forger->sign(forged);
  ASSERT_TRUE(forgedBytes);
  auto refused = ft::openSession(endpoint, *config, "forger", *forgedBytes, forged.sessionId);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("signature"), std::string::npos) << refused.error().describe();

  // No grant at all: refused (a client cannot bypass the orchestrator).
  auto bare = ft::openSession(endpoint, *config, "bypass");
  ASSERT_FALSE(bare);
  EXPECT_NE(bare.error().message.find("grant"), std::string::npos) << bare.error().describe();

  // A genuine grant used after its expiry (grant_ttl_ms = 1500 here): refused.
  auto late = ft::requestPlacement(orchestrator->address, request, 5s);
  ASSERT_TRUE(late) << late.error().describe();
  std::this_thread::sleep_for(1600ms);
  auto expired = ft::openSession(late->endpoints.front(), *config, "late", late->signedGrant, late->sessionId);
  ASSERT_FALSE(expired);
  EXPECT_NE(expired.error().message.find("expired"), std::string::npos) << expired.error().describe();
}

TEST_F(Cluster, OrchestratorRestartLosesNothingAndNodeDeathReleasesItsSessions) {
  const std::string token = addTenant("vm", 50, "64MiB", 2);
  App& app = startApp("vm", token);
  ASSERT_TRUE(app.started()) << debugText();
  ASSERT_TRUE(eventually([&] { return sessionsJson().find(R"("state":"active")") != std::string::npos; }, 5s));

  // SIGKILL: no chance to checkpoint or close the database. The state is SQLite in WAL mode, and
  // every change was committed before its call answered, so nothing may be lost.
  orchestrator->process->signal(SIGKILL);
  ASSERT_TRUE(orchestrator->process->wait(10s).has_value()) << orchestrator->log();
  ASSERT_TRUE(orchestrator->start()) << orchestrator->log();
  // Same tenants, same session; the nodes come back by themselves; the application never noticed.
  auto tenants = flytctl(orchestrator->address, {"--json", "tenant", "list"});
  EXPECT_NE(compact(tenants.out).find(R"("name":"vm")"), std::string::npos) << tenants.out;
  EXPECT_TRUE(eventually([&] {
    const auto nodeList = compact(flytctl(orchestrator->address, {"--json", "node", "list"}).out);
    return nodeList.find(R"("up":false)") == std::string::npos && nodeList.find("node-b") != std::string::npos;
  }, 10s)) << debugText();
  EXPECT_NE(sessionsJson().find(R"("state":"active")"), std::string::npos) << sessionsJson();
  EXPECT_EQ(app.ask("alloc 1000000"), "alloc 1000000 cudaSuccess");
  App& another = startApp("vm", token);
  ASSERT_TRUE(another.started()) << debugText();

  // A node that dies is marked down after node_timeout_ms (1.5 s here) and its sessions are released.
  auto& nodeA = *nodes[0];
  nodeA.process->signal(SIGKILL);
  EXPECT_TRUE(eventually([&] {
    const auto nodeList = compact(flytctl(orchestrator->address, {"--json", "node", "list"}).out);
    return nodeList.find(R"("up":false)") != std::string::npos;
  }, 6s)) << debugText();
  EXPECT_TRUE(eventually([&] { return sessionsJson().find(R"("node":"node-a")") == std::string::npos; }, 6s))
      << sessionsJson();
}

TEST_F(Cluster, FlytctlPrintsTablesAndJsonAndClearErrors) {
  addTenant("vm-a", 25, "1GiB");
  auto table = flytctl(orchestrator->address, {"tenant", "list"});
  ASSERT_EQ(table.status, 0) << table.err;
  EXPECT_NE(table.out.find("NAME"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("vm-a"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("1.0 GiB"), std::string::npos) << table.out;
  auto nodeTable = flytctl(orchestrator->address, {"node", "list"});
  EXPECT_NE(nodeTable.out.find("node-a"), std::string::npos) << nodeTable.out;
  EXPECT_NE(nodeTable.out.find("node-b"), std::string::npos) << nodeTable.out;

  auto unknown = flytctl(orchestrator->address, {"tenant", "set", "nobody", "--sm", "10"});
  EXPECT_NE(unknown.status, 0);
  EXPECT_NE(unknown.err.find("nobody"), std::string::npos) << unknown.err;
  auto tooLarge = flytctl(orchestrator->address, {"tenant", "add", "huge", "--sm", "10", "--memory", "64GiB"});
  EXPECT_NE(tooLarge.status, 0);
  EXPECT_NE(tooLarge.err.find("larger than any GPU"), std::string::npos) << tooLarge.err;
  auto unreachable = flytctl(fmt::format("127.0.0.1:{}", freePort()), {"status"});
  EXPECT_NE(unreachable.status, 0);
  EXPECT_NE(unreachable.err.find("cannot reach"), std::string::npos) << unreachable.err;
}

}  // namespace

namespace {

// A cluster whose orchestrator has both role secrets (admin_token_file, node_token_file).
class ClusterAuth : public ClusterProcesses {
 protected:
  void SetUp() override {
    makeDirectory("flyt-cluster-auth");
    adminFile = secretFile("admin", "admin-secret-0123456789abcdef");
    nodeFile = secretFile("node", "node-secret-0123456789abcdef");
    orchestrator = std::make_unique<Orchestrator>(
        dir, fmt::format("admin_token_file = \"{}\"\nnode_token_file = \"{}\"\n", adminFile, nodeFile));
    ASSERT_TRUE(orchestrator->start()) << orchestrator->log();
  }
  std::string secretFile(const std::string& name, const std::string& secret) {
    const std::string path = dir + "/" + name + ".token";
    std::ofstream(path) << secret << "\n";
    ::chmod(path.c_str(), 0600);
    return path;
  }

  std::string adminFile;
  std::string nodeFile;
};

}  // namespace

TEST_F(ClusterAuth, NodesRegisterOnlyWithTheNodeTokenFlytctlNeedsTheAdminTokenApplicationsNeither) {
  // The right node token from node.toml ([node] orchestrator_token_file), a wrong one from the environment.
  std::ofstream(dir + "/node.toml") << fmt::format("[node]\norchestrator_token_file = \"{}\"\n", nodeFile);
  nodes.push_back(std::make_unique<Node>("node-good", orchestrator->address,
                                         std::vector<std::string>{"--config", dir + "/node.toml"}));
  ASSERT_TRUE(nodes.back()->registered()) << debugText();
  nodes.push_back(std::make_unique<Node>("node-bad", orchestrator->address, std::vector<std::string>{},
                                         std::vector<std::string>{"FLYT_NODE_TOKEN=wrong-node-secret-0123456789"}));
  Node& bad = *nodes.back();
  EXPECT_TRUE(eventually([&] { return bad.log().find("refused this connection: wrong node token") != std::string::npos; },
                         10s))
      << debugText();
  EXPECT_TRUE(std::regex_search(orchestrator->log(),
                                std::regex(R"(refused node connection from 127\.0\.0\.1:\d+: wrong token)")))
      << orchestrator->log();

  auto anonymous = flytctl(orchestrator->address, {"node", "list"});
  EXPECT_EQ(anonymous.status, 1);
  EXPECT_NE(anonymous.err.find("refused this connection: the admin role needs this orchestrator's admin token"),
            std::string::npos)
      << anonymous.err;
  auto nodeList = flytctl(orchestrator->address, {"--token-file", adminFile, "node", "list"});
  ASSERT_EQ(nodeList.status, 0) << nodeList.err;
  EXPECT_NE(nodeList.out.find("node-good"), std::string::npos) << nodeList.out;
  EXPECT_EQ(nodeList.out.find("node-bad"), std::string::npos) << nodeList.out;

  // An application connects as a tenant: no connection secret, its tenant token per call.
  auto added = flytctl(orchestrator->address, {"--token-file", adminFile, "--json", "tenant", "add", "vm", "--sm",
                                               "50", "--memory", "64MiB"});
  ASSERT_EQ(added.status, 0) << added.err;
  std::smatch match;
  const std::string text = compact(added.out);
  ASSERT_TRUE(std::regex_search(text, match, std::regex(R"re("token":"([^"]+)")re"))) << added.out;
  apps.push_back(std::make_unique<App>(orchestrator->address, "vm", match[1]));
  ASSERT_TRUE(apps.back()->started()) << debugText();
  EXPECT_EQ(apps.back()->ask("alloc 1000000"), "alloc 1000000 cudaSuccess");
}
