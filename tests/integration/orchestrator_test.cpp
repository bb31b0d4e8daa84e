// flyt-orchestrator as a real process on a temporary SQLite file, driven by real flytctl processes
// and by an in-test Cap'n Proto client (NodeStandIn) that plays flyt-node's part of the protocol
// (registerNode, heartbeat) and an application's (openSession). The stand-in replaces flyt-node
// only where a real node is not needed to check the orchestrator's decisions; tests/cluster runs
// real nodes.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <kj/async-io.h>
#include <kj/debug.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <regex>

#include "flyt/transport/grant.hpp"
#include "flyt/transport/orchestrator_client.hpp"
#include "flyt/transport/orchestrator_connection.hpp"
#include "flyt/wire/cluster.capnp.h"
#include "process_helpers.hpp"

using namespace std::chrono_literals;
using flyt::test::eventually;
using flyt::test::Process;
using flyt::transport::OrchestratorRole;

namespace {

constexpr std::uint64_t kGiB = 1ULL << 30;

struct CommandResult {
  int status = -1;
  std::string out;
  std::string err;
};

struct FakeGpu {
  std::string uuid;
  std::uint64_t memory = 80 * kGiB;
};

struct Granted {
  std::uint64_t id = 0;
  std::string node;
  std::string gpu;
  std::vector<std::string> endpoints;
  std::vector<std::byte> grant;
};

struct Orders {
  bool reregister = false;
  std::vector<std::uint64_t> kill;
  std::map<std::uint64_t, std::uint64_t> quotas;
};

// Speaks the cluster protocol to the orchestrator the way flyt-node (and an application's
// libcudart) would: registerNode and heartbeat on a connection authenticated as a node (with
// `nodeToken`, if any), openSession on a tenant connection. Every call is bounded; a refusal comes
// back as its message.
class NodeStandIn {
 public:
  explicit NodeStandIn(std::string address, std::string nodeToken = "")
      : m_address(std::move(address)), m_nodeToken(std::move(nodeToken)) {}

  std::vector<std::byte> registerNode(const std::string& name, const std::vector<FakeGpu>& gpus,
                                      std::uint32_t version = flyt::wire::CLUSTER_PROTOCOL_VERSION,
                                      std::string* error = nullptr) {
    std::vector<std::byte> key;
    auto failed = call(OrchestratorRole::kNode, [&](flyt::wire::Orchestrator::Client& main) {
      auto request = main.registerNodeRequest();
      auto node = request.initNode();
      node.setProtocolVersion(version);
      node.setName(name);
      node.setHostId("host-" + name);
      node.setShmEndpoint("shm://" + name);
      node.setTcpEndpoint("tcp://127.0.0.1:7070");
      node.setExecutor("standin");
      auto list = node.initGpus(unsigned(gpus.size()));
      for (unsigned i = 0; i < gpus.size(); ++i) {
        list[i].setUuid(gpus[i].uuid);
        list[i].setName("H200");
        list[i].setSmCount(132);
        list[i].setMemoryBytes(gpus[i].memory);
      }
      auto response = wait(request.send());
      auto data = response.getPublicKey();
      key.assign(reinterpret_cast<const std::byte*>(data.begin()), reinterpret_cast<const std::byte*>(data.end()));
    });
    if (error != nullptr) *error = failed;
    return key;
  }

  Orders heartbeat(const std::string& name, const std::vector<std::uint64_t>& live,
                   const std::vector<std::uint64_t>& ended = {}) {
    Orders orders;
    auto failed = call(OrchestratorRole::kNode, [&](flyt::wire::Orchestrator::Client& main) {
      auto request = main.heartbeatRequest();
      auto report = request.initReport();
      report.setName(name);
      auto liveList = report.initLive(unsigned(live.size()));
      for (unsigned i = 0; i < live.size(); ++i) liveList.set(i, live[i]);
      auto endedList = report.initEnded(unsigned(ended.size()));
      for (unsigned i = 0; i < ended.size(); ++i) {
        endedList[i].setSessionId(ended[i]);
        endedList[i].setReason("exited");
      }
      auto response = wait(request.send());
      auto o = response.getOrders();
      orders.reregister = o.getReregister();
      for (auto id : o.getKill()) orders.kill.push_back(id);
      for (auto q : o.getMemoryQuotas()) orders.quotas[q.getSessionId()] = q.getMemoryBytes();
    });
    EXPECT_EQ(failed, "");
    return orders;
  }

  // The placement, or nullopt with the refusal in `error`.
  std::optional<Granted> openSession(const std::string& tenant, const std::string& token, const std::string& hostId,
                                     std::string* error = nullptr,
                                     OrchestratorRole role = OrchestratorRole::kTenant) {
    Granted granted;
    auto failed = call(role, [&](flyt::wire::Orchestrator::Client& main) {
      auto request = main.openSessionRequest();
      auto r = request.initRequest();
      r.setTenant(tenant);
      r.setToken(token);
      r.setClientName("orchestrator_test");
      r.setHostId(hostId);
      r.setPid(std::uint32_t(::getpid()));
      auto response = wait(request.send());
      auto p = response.getPlacement();
      granted.id = p.getSessionId();
      granted.node = p.getNode().cStr();
      granted.gpu = p.getGpuUuid().cStr();
      for (auto e : p.getEndpoints()) granted.endpoints.emplace_back(e.cStr());
      auto g = p.getSignedGrant();
      granted.grant.assign(reinterpret_cast<const std::byte*>(g.begin()), reinterpret_cast<const std::byte*>(g.end()));
    });
    if (error != nullptr) *error = failed;
    if (!failed.empty()) return std::nullopt;
    return granted;
  }

  // Administration calls on a connection of `role`: "" when they worked, else the refusal.
  std::string addTenantAs(OrchestratorRole role, const std::string& name) {
    return call(role, [&](flyt::wire::Orchestrator::Client& main) {
      auto request = main.addTenantRequest();
      auto tenant = request.initTenant();
      tenant.setName(name);
      tenant.setSmPercent(10);
      tenant.setMemoryBytes(kGiB);
      tenant.setMaxSessions(1);
      (void)wait(request.send());
    });
  }
  std::string statusAs(OrchestratorRole role) {
    return call(role, [&](flyt::wire::Orchestrator::Client& main) {
      auto request = main.statusRequest();
      (void)wait(request.send());
    });
  }
  // Opens a fresh connection of `role` proving `secret`: "" when the orchestrator accepted it.
  std::string tryConnect(OrchestratorRole role, const std::string& secret) {
    auto opened = flyt::transport::OrchestratorConnection::open(*m_io, m_address, role, secret, 5s);
    return opened ? "" : opened.error().message;
  }
  std::string listNodesAs(OrchestratorRole role) {
    return call(role, [&](flyt::wire::Orchestrator::Client& main) {
      auto request = main.listNodesRequest();
      (void)wait(request.send());
    });
  }

 private:
  // Runs `body` on this stand-in's connection of `role` (opened at first use); "" or what failed.
  template <class Body>
  std::string call(OrchestratorRole role, Body&& body) {
    auto& link = m_links[role];
    if (!link) {
      const std::string secret = role == OrchestratorRole::kNode ? m_nodeToken : "";
      auto opened = flyt::transport::OrchestratorConnection::open(*m_io, m_address, role, secret, 5s);
      if (!opened) return opened.error().message;
      link = std::move(*opened);
    }
    std::string error;
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] { body(link->orchestrator()); })) {
      error = flyt::transport::plainRpcMessage(e->getDescription().cStr());
    }
    return error;
  }

  template <class T>
  T wait(kj::Promise<T>&& promise) {
    auto timeout = m_io->provider->getTimer().afterDelay(5 * kj::SECONDS).then(
        []() -> T { kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "no answer within 5 s")); });
    return promise.exclusiveJoin(kj::mv(timeout)).wait(m_io->waitScope);
  }

  std::string m_address;
  std::string m_nodeToken;
  std::unique_ptr<kj::AsyncIoContext> m_io = std::make_unique<kj::AsyncIoContext>(kj::setupAsyncIo());
  std::map<OrchestratorRole, std::unique_ptr<flyt::transport::OrchestratorConnection>> m_links;
};

class OrchestratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/flyt-orchestrator-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    m_dir = pattern;
  }
  void TearDown() override {
    m_peer.reset();
    stop();
    std::filesystem::remove_all(m_dir);
  }

  // Starts flyt-orchestrator on a free port with `settings` under [orchestrator]. Nodes time out
  // after `nodeTimeoutMs`: long by default, since the stand-in heartbeats only when a test says so.
  void start(const std::string& settings = "", int nodeTimeoutMs = 30000, const std::string& listen = "127.0.0.1:0") {
    const std::string config = m_dir + "/orchestrator.toml";
    std::ofstream(config) << fmt::format("[orchestrator]\nheartbeat_ms = 100\nnode_timeout_ms = {}\n{}", nodeTimeoutMs,
                                         settings);
    m_orchestrator = std::make_unique<Process>(std::vector<std::string>{
        FLYT_ORCHESTRATOR_PATH, "--config", config, "--listen", listen, "--database", database(),
        "--ready-fd", "1", "--log", "debug"});
    auto line = m_orchestrator->readLine(10s);
    ASSERT_TRUE(line) << m_orchestrator->stderrText();
    m_address = *line;
    m_peer.reset();
    m_peer = std::make_unique<NodeStandIn>(m_address);
  }

  // SIGTERM, as a service manager stops it; answers its exit status.
  int stop() {
    if (!m_orchestrator) return -1;
    m_peer.reset();
    m_orchestrator->signal(SIGTERM);
    auto status = m_orchestrator->wait(10s);
    m_log += m_orchestrator->stderrText();
    m_orchestrator.reset();
    return status ? *status : -1;
  }

  CommandResult flytctl(std::vector<std::string> args, const std::string& address = "",
                        std::vector<std::string> env = {}) {
    args.insert(args.begin(), {FLYTCTL_PATH, "--orchestrator", address.empty() ? m_address : address});
    Process process(args, std::move(env));
    CommandResult result;
    result.out = process.readAll(15s);
    auto status = process.wait(15s);
    result.err = process.stderrText();
    result.status = status && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
    return result;
  }

  // A tenant added through flytctl; answers its token.
  std::string addTenant(const std::string& name, const std::string& sm, const std::string& memory,
                        const std::string& maxSessions = "1") {
    auto added = flytctl({"--json", "tenant", "add", name, "--sm", sm, "--memory", memory, "--max-sessions",
                          maxSessions});
    EXPECT_EQ(added.status, 0) << added.err;
    const auto at = added.out.find("\"token\":\"");
    EXPECT_NE(at, std::string::npos) << added.out;
    return added.out.substr(at + 9, 32);
  }

  // A file holding `secret`, readable by its owner only (unless `mode` says otherwise).
  std::string tokenFile(const std::string& name, const std::string& secret, mode_t mode = 0600) {
    const std::string path = m_dir + "/" + name + ".token";
    std::ofstream(path) << secret << "\n";
    ::chmod(path.c_str(), mode);
    return path;
  }

  [[nodiscard]] std::string database() const { return m_dir + "/state/orchestrator.db"; }
  [[nodiscard]] std::string orchestratorLog() const {
    return m_log + (m_orchestrator ? m_orchestrator->stderrText() : "");
  }

  std::string m_dir;
  std::string m_address;
  std::string m_log;
  std::unique_ptr<Process> m_orchestrator;
  std::unique_ptr<NodeStandIn> m_peer;
};

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

bool matches(const std::string& text, const std::string& pattern) { return std::regex_search(text, std::regex(pattern)); }

const std::string kAdminSecret = "admin-secret-0123456789abcdef";
const std::string kNodeSecret = "node-secret-0123456789abcdef";

// A raw TCP connection to "127.0.0.1:PORT" (or "0.0.0.0:PORT"), for peers that speak no Flyt.
int connectRaw(const std::string& address) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(std::uint16_t(std::stoi(address.substr(address.rfind(':') + 1))));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// What the peer sent until it closed (or reset) the connection, at most `timeout`; `closed` says
// whether it did.
std::string readUntilClosed(int fd, std::chrono::milliseconds timeout, bool* closed) {
  std::string text;
  *closed = false;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return text;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, int(left.count())) <= 0) continue;
    char buffer[4096];
    const auto got = ::read(fd, buffer, sizeof buffer);
    if (got <= 0) {
      *closed = true;
      return text;
    }
    text.append(buffer, std::size_t(got));
  }
}

}  // namespace

TEST_F(OrchestratorTest, FlytctlAddsListsSetsAndRemovesTenants) {
  ASSERT_NO_FATAL_FAILURE(start());
  auto added = flytctl({"tenant", "add", "vm1", "--sm", "50", "--memory", "8GiB"});
  ASSERT_EQ(added.status, 0) << added.err;
  EXPECT_TRUE(contains(added.out, "tenant vm1 added: 50% of a GPU's SMs and 8.0 GiB per session, at most 1 session"))
      << added.out;
  EXPECT_TRUE(contains(added.out, "Keep the token")) << added.out;
  ASSERT_EQ(flytctl({"tenant", "add", "vm2", "--sm", "25", "--memory", "512MiB", "--max-sessions", "3", "--token",
                     "secret-token-2"})
                .status,
            0);

  auto table = flytctl({"tenant", "list"});
  ASSERT_EQ(table.status, 0) << table.err;
  EXPECT_EQ(table.out,
            "NAME  SM SHARE  MEMORY     MAX SESSIONS  SESSIONS\n"
            "vm1   50%       8.0 GiB    1             0\n"
            "vm2   25%       512.0 MiB  3             0\n");
  auto json = flytctl({"tenant", "list", "--json"});
  EXPECT_EQ(json.out,
            "[{\"name\":\"vm1\",\"smPercent\":50,\"memoryBytes\":8589934592,\"maxSessions\":1,\"sessions\":0},"
            "{\"name\":\"vm2\",\"smPercent\":25,\"memoryBytes\":536870912,\"maxSessions\":3,\"sessions\":0}]\n");

  auto set = flytctl({"tenant", "set", "vm1", "--memory", "16GiB", "--max-sessions", "2"});
  ASSERT_EQ(set.status, 0) << set.err;
  EXPECT_TRUE(contains(set.out, "16.0 GiB per session, at most 2 sessions")) << set.out;
  EXPECT_TRUE(contains(flytctl({"--json", "tenant", "list"}).out, "\"memoryBytes\":17179869184,\"maxSessions\":2"));

  auto removed = flytctl({"tenant", "rm", "vm2"});
  EXPECT_EQ(removed.status, 0);
  EXPECT_EQ(removed.out, "tenant vm2 removed; 0 sessions ended\n");
  EXPECT_FALSE(contains(flytctl({"tenant", "list"}).out, "vm2"));

  auto unknown = flytctl({"tenant", "rm", "vm2"});
  EXPECT_EQ(unknown.status, 1);
  EXPECT_EQ(unknown.err, "flytctl: unknown tenant 'vm2'\n");
  auto duplicate = flytctl({"tenant", "add", "vm1", "--sm", "10", "--memory", "1GiB"});
  EXPECT_EQ(duplicate.status, 1);
  EXPECT_TRUE(contains(duplicate.err, "tenant 'vm1' already exists")) << duplicate.err;
  auto badName = flytctl({"tenant", "add", "no/slash", "--sm", "10", "--memory", "1GiB"});
  EXPECT_EQ(badName.status, 1);
  EXPECT_TRUE(contains(badName.err, "is not 1-64 of [A-Za-z0-9_.-]")) << badName.err;
}

TEST_F(OrchestratorTest, QuotaLargerThanAnyGpuIsRefusedOnceGpusAreKnown) {
  ASSERT_NO_FATAL_FAILURE(start());
  m_peer->registerNode("node-a", {{"GPU-a0", 80 * kGiB}});
  auto refused = flytctl({"tenant", "add", "big", "--sm", "50", "--memory", "200GiB"});
  EXPECT_EQ(refused.status, 1);
  EXPECT_EQ(refused.err, "flytctl: memory quota 200.0 GiB is larger than any GPU (largest: 80.0 GiB, node-a)\n");
  auto set = flytctl({"tenant", "add", "ok", "--sm", "50", "--memory", "8GiB"});
  ASSERT_EQ(set.status, 0);
  EXPECT_EQ(flytctl({"tenant", "set", "ok", "--memory", "100GiB"}).status, 1);
}

TEST_F(OrchestratorTest, SessionsArePlacedBestFitAcrossTwoNodes) {
  ASSERT_NO_FATAL_FAILURE(start());
  m_peer->registerNode("node-b", {{"GPU-b0", 80 * kGiB}});
  m_peer->registerNode("node-a", {{"GPU-a0", 80 * kGiB}});
  const auto token = addTenant("vm1", "50", "8GiB", "4");
  std::vector<Granted> sessions;
  for (int i = 0; i < 4; ++i) {
    std::string error;
    auto granted = m_peer->openSession("vm1", token, "host-node-a", &error);
    ASSERT_TRUE(granted) << error;
    sessions.push_back(*granted);
  }
  // Ties go to node-a; best-fit then fills its GPU before node-b's.
  EXPECT_EQ(sessions[0].node, "node-a");
  EXPECT_EQ(sessions[1].node, "node-a");
  EXPECT_EQ(sessions[2].node, "node-b");
  EXPECT_EQ(sessions[3].node, "node-b");
  EXPECT_EQ(sessions[0].gpu, "GPU-a0");
  // Shared memory first for a client on the node's host, TCP only for others.
  EXPECT_EQ(sessions[0].endpoints, (std::vector<std::string>{"shm://node-a", "tcp://127.0.0.1:7070"}));
  EXPECT_EQ(sessions[2].endpoints, (std::vector<std::string>{"tcp://127.0.0.1:7070"}));

  auto nodes = flytctl({"node", "list"});
  EXPECT_TRUE(contains(nodes.out, "node-a  up")) << nodes.out;
  EXPECT_TRUE(contains(nodes.out, "100%     17.0 GiB / 80.0 GiB  2")) << nodes.out;
  auto list = flytctl({"session", "list"});
  EXPECT_TRUE(contains(list.out, fmt::format("{:016x}  vm1", sessions[0].id))) << list.out;
  EXPECT_TRUE(contains(list.out, "granted")) << list.out;
}

TEST_F(OrchestratorTest, RefusesWhenFullBeyondMaxSessionsAndWithAWrongToken) {
  ASSERT_NO_FATAL_FAILURE(start());
  m_peer->registerNode("node-a", {{"GPU-a0", 80 * kGiB}});
  const auto big = addTenant("big", "75", "8GiB", "5");
  const auto one = addTenant("one", "10", "1GiB", "1");
  std::string error;
  ASSERT_TRUE(m_peer->openSession("big", big, "", &error)) << error;
  EXPECT_FALSE(m_peer->openSession("big", big, "", &error));
  EXPECT_EQ(error,
            "no GPU has 75% of its SMs and 8.5 GiB free (8.0 GiB quota + 512.0 MiB per-session overhead): "
            "node-a GPU-a0 has 25% and 71.5 GiB free");

  ASSERT_TRUE(m_peer->openSession("one", one, "", &error)) << error;
  EXPECT_FALSE(m_peer->openSession("one", one, "", &error));
  EXPECT_TRUE(contains(error, "tenant 'one' already holds 1 session (max_sessions 1)")) << error;

  EXPECT_FALSE(m_peer->openSession("one", "not-the-token", "", &error));
  EXPECT_EQ(error, "unknown tenant 'one' or wrong token");
  EXPECT_FALSE(m_peer->openSession("nobody", one, "", &error));
  EXPECT_EQ(error, "unknown tenant 'nobody' or wrong token");
}

TEST_F(OrchestratorTest, GrantVerifiesWithTheKeyNodesGetWhenTheyRegister) {
  ASSERT_NO_FATAL_FAILURE(start("session_idle_timeout_s = 600\n"));
  const auto key = m_peer->registerNode("node-a", {{"GPU-a0", 80 * kGiB}});
  ASSERT_EQ(key.size(), 32u);
  const auto token = addTenant("vm1", "50", "8GiB");
  const auto before = flyt::transport::unixMillis();
  auto granted = m_peer->openSession("vm1", token, "");
  ASSERT_TRUE(granted);
  auto grant = flyt::transport::checkGrantFor(key, granted->grant, "node-a", granted->id, before);
  ASSERT_TRUE(grant) << grant.error().describe();
  EXPECT_EQ(grant->tenant, "vm1");
  EXPECT_EQ(grant->gpuUuid, "GPU-a0");
  EXPECT_EQ(grant->smPercent, 50u);
  EXPECT_EQ(grant->memoryBytes, 8 * kGiB);
  EXPECT_EQ(grant->idleTimeoutS, 600u);
  EXPECT_NEAR(double(grant->expiresAtMs - grant->issuedAtMs), 30000.0, 1.0);
  EXPECT_FALSE(flyt::transport::checkGrantFor(key, granted->grant, "node-b", granted->id, before));
}

TEST_F(OrchestratorTest, RegistrationWithAnotherProtocolVersionIsRefused) {
  ASSERT_NO_FATAL_FAILURE(start());
  std::string error;
  m_peer->registerNode("node-a", {{"GPU-a0"}}, flyt::wire::CLUSTER_PROTOCOL_VERSION + 1, &error);
  EXPECT_TRUE(contains(error, "speaks cluster protocol version 2; this orchestrator speaks version 1")) << error;
  EXPECT_TRUE(m_peer->heartbeat("node-a", {}).reregister);
}

TEST_F(OrchestratorTest, HeartbeatsReconcileSessions) {
  ASSERT_NO_FATAL_FAILURE(start());
  m_peer->registerNode("node-a", {{"GPU-a0"}});
  const auto token = addTenant("vm1", "10", "1GiB", "3");
  auto first = m_peer->openSession("vm1", token, "");
  auto second = m_peer->openSession("vm1", token, "");
  auto third = m_peer->openSession("vm1", token, "");
  ASSERT_TRUE(first && second && third);

  // Listed live: granted -> active. A live session nobody granted: ordered killed.
  auto orders = m_peer->heartbeat("node-a", {first->id, second->id, third->id, 42});
  EXPECT_EQ(orders.kill, std::vector<std::uint64_t>{42});
  EXPECT_FALSE(orders.reregister);
  auto list = flytctl({"--json", "session", "list"});
  EXPECT_TRUE(contains(list.out, fmt::format("\"sessionId\":\"{:016x}\",\"tenant\":\"vm1\",\"node\":\"node-a\"", first->id)));
  EXPECT_FALSE(contains(list.out, "granted")) << list.out;

  // Reported ended: released. No longer listed while active: released.
  m_peer->heartbeat("node-a", {third->id}, {first->id});
  list = flytctl({"--json", "session", "list"});
  EXPECT_FALSE(contains(list.out, fmt::format("{:016x}", first->id)));
  EXPECT_FALSE(contains(list.out, fmt::format("{:016x}", second->id)));
  EXPECT_TRUE(contains(list.out, fmt::format("{:016x}", third->id)));
  EXPECT_TRUE(m_peer->heartbeat("node-b", {}).reregister);
}

TEST_F(OrchestratorTest, KilledSessionIsReleasedAndOrderedKilledUntilTheNodeDropsIt) {
  ASSERT_NO_FATAL_FAILURE(start());
  m_peer->registerNode("node-a", {{"GPU-a0"}});
  const auto token = addTenant("vm1", "100", "1GiB");
  auto granted = m_peer->openSession("vm1", token, "");
  ASSERT_TRUE(granted);
  m_peer->heartbeat("node-a", {granted->id});
  auto killed = flytctl({"session", "kill", fmt::format("{:016x}", granted->id)});
  ASSERT_EQ(killed.status, 0) << killed.err;
  // Released at once: the tenant's only session slot and the whole GPU are free again.
  std::string error;
  auto next = m_peer->openSession("vm1", token, "", &error);
  ASSERT_TRUE(next) << error;
  EXPECT_EQ(m_peer->heartbeat("node-a", {granted->id, next->id}).kill, std::vector<std::uint64_t>{granted->id});
  EXPECT_EQ(m_peer->heartbeat("node-a", {granted->id, next->id}).kill, std::vector<std::uint64_t>{granted->id});
  EXPECT_TRUE(m_peer->heartbeat("node-a", {next->id}).kill.empty());
  auto unknown = flytctl({"session", "kill", fmt::format("{:016x}", granted->id)});
  EXPECT_EQ(unknown.status, 1);
  EXPECT_EQ(unknown.err, fmt::format("flytctl: unknown session {:016x}\n", granted->id));
}

TEST_F(OrchestratorTest, RemovingATenantOrdersItsSessionsKilled) {
  ASSERT_NO_FATAL_FAILURE(start());
  m_peer->registerNode("node-a", {{"GPU-a0"}});
  const auto token = addTenant("vm1", "10", "1GiB");
  auto granted = m_peer->openSession("vm1", token, "");
  ASSERT_TRUE(granted);
  m_peer->heartbeat("node-a", {granted->id});
  auto removed = flytctl({"tenant", "rm", "vm1"});
  EXPECT_EQ(removed.out, "tenant vm1 removed; 1 session ended\n");
  EXPECT_EQ(m_peer->heartbeat("node-a", {granted->id}).kill, std::vector<std::uint64_t>{granted->id});
}

TEST_F(OrchestratorTest, ChangedMemoryQuotaReachesLiveSessionsOnce) {
  ASSERT_NO_FATAL_FAILURE(start());
  m_peer->registerNode("node-a", {{"GPU-a0"}});
  const auto token = addTenant("vm1", "10", "1GiB", "2");
  auto active = m_peer->openSession("vm1", token, "");
  auto pending = m_peer->openSession("vm1", token, "");
  ASSERT_TRUE(active && pending);
  m_peer->heartbeat("node-a", {active->id});
  auto set = flytctl({"tenant", "set", "vm1", "--memory", "2GiB", "--sm", "20"});
  ASSERT_EQ(set.status, 0) << set.err;
  EXPECT_TRUE(contains(set.out, "keep their SM share until they end")) << set.out;
  auto orders = m_peer->heartbeat("node-a", {active->id});
  EXPECT_EQ(orders.quotas, (std::map<std::uint64_t, std::uint64_t>{{active->id, 2 * kGiB}}));
  EXPECT_TRUE(m_peer->heartbeat("node-a", {active->id}).quotas.empty());
  // The session that was not live yet gets its quota once the node reports it.
  orders = m_peer->heartbeat("node-a", {active->id, pending->id});
  EXPECT_EQ(orders.quotas, (std::map<std::uint64_t, std::uint64_t>{{pending->id, 2 * kGiB}}));
}

TEST_F(OrchestratorTest, SilentNodeIsMarkedDownAndItsSessionsReleased) {
  ASSERT_NO_FATAL_FAILURE(start("", 600));
  m_peer->registerNode("node-a", {{"GPU-a0"}});
  const auto token = addTenant("vm1", "10", "1GiB");
  auto granted = m_peer->openSession("vm1", token, "");
  ASSERT_TRUE(granted);
  m_peer->heartbeat("node-a", {granted->id});
  EXPECT_TRUE(eventually([&] { return contains(flytctl({"node", "list"}).out, "node-a  down"); }, 5s));
  EXPECT_EQ(flytctl({"session", "list"}).out, "no sessions\n");
  std::string error;
  EXPECT_FALSE(m_peer->openSession("vm1", token, "", &error));
  EXPECT_EQ(error, "no GPU node is up: node-a is down");
  // Heard again: up, and the session it still serves is unknown now.
  EXPECT_EQ(m_peer->heartbeat("node-a", {granted->id}).kill, std::vector<std::uint64_t>{granted->id});
  EXPECT_TRUE(contains(flytctl({"node", "list"}).out, "node-a  up"));
}

TEST_F(OrchestratorTest, UnusedExpiredGrantIsReleased) {
  ASSERT_NO_FATAL_FAILURE(start("grant_ttl_ms = 300\n"));
  m_peer->registerNode("node-a", {{"GPU-a0"}});
  const auto token = addTenant("vm1", "10", "1GiB");
  ASSERT_TRUE(m_peer->openSession("vm1", token, ""));
  EXPECT_TRUE(eventually([&] { return flytctl({"session", "list"}).out == "no sessions\n"; }, 5s));
  EXPECT_TRUE(contains(orchestratorLog(), "its grant expired unused"));
}

TEST_F(OrchestratorTest, RestartKeepsTenantsSessionsAndTheSigningKey) {
  ASSERT_NO_FATAL_FAILURE(start());
  const auto key = m_peer->registerNode("node-a", {{"GPU-a0"}});
  const auto token = addTenant("vm1", "10", "1GiB", "2");
  auto granted = m_peer->openSession("vm1", token, "");
  ASSERT_TRUE(granted);
  m_peer->heartbeat("node-a", {granted->id});
  EXPECT_EQ(stop(), 0);

  ASSERT_NO_FATAL_FAILURE(start());
  EXPECT_TRUE(contains(flytctl({"tenant", "list"}).out, "vm1   10%       1.0 GiB  2             1"));
  EXPECT_TRUE(contains(flytctl({"session", "list"}).out, fmt::format("{:016x}", granted->id)));
  // Down until it heartbeats; its sessions wait for that.
  EXPECT_TRUE(contains(flytctl({"node", "list"}).out, "node-a  down"));
  EXPECT_TRUE(m_peer->heartbeat("node-a", {granted->id}).kill.empty());
  EXPECT_TRUE(contains(flytctl({"node", "list"}).out, "node-a  up"));
  EXPECT_EQ(m_peer->registerNode("node-a", {{"GPU-a0"}}), key);
  EXPECT_TRUE(flyt::transport::verifyGrant(key, granted->grant));
  // The token still works.
  std::string error;
  EXPECT_TRUE(m_peer->openSession("vm1", token, "", &error)) << error;
}

TEST_F(OrchestratorTest, FlytctlStatusAndHelp) {
  ASSERT_NO_FATAL_FAILURE(start());
  auto status = flytctl({"status"});
  ASSERT_EQ(status.status, 0) << status.err;
  EXPECT_TRUE(contains(status.out, "placement  best-fit")) << status.out;
  EXPECT_TRUE(contains(status.out, "database   " + database())) << status.out;
  EXPECT_TRUE(contains(flytctl({"--json", "status"}).out, "\"nodesUp\":0"));
  auto help = flytctl({"tenant", "add", "--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_TRUE(contains(help.out, "flytctl tenant add vm1 --sm 50 --memory 8GiB")) << help.out;
}

TEST_F(OrchestratorTest, AdministrationNeedsTheAdminTokenWhenOneIsSet) {
  const auto admin = tokenFile("admin", kAdminSecret);
  const auto wrong = tokenFile("wrong", "another-secret-0123456789");
  ASSERT_NO_FATAL_FAILURE(start(fmt::format("admin_token_file = \"{}\"\n", admin)));

  auto missing = flytctl({"tenant", "add", "vm1", "--sm", "10", "--memory", "1GiB"});
  EXPECT_EQ(missing.status, 1);
  EXPECT_EQ(missing.err,
            fmt::format("flytctl: the orchestrator at tcp://{} refused this connection: the admin role needs this "
                        "orchestrator's admin token and the connection sent none (flytctl --token-file FILE, "
                        "FLYT_ADMIN_TOKEN_FILE or FLYT_ADMIN_TOKEN)\n",
                        m_address));
  auto refused = flytctl({"--token-file", wrong, "tenant", "add", "vm1", "--sm", "10", "--memory", "1GiB"});
  EXPECT_EQ(refused.status, 1);
  EXPECT_EQ(refused.err,
            fmt::format("flytctl: the orchestrator at tcp://{} refused this connection: wrong admin token (flytctl "
                        "--token-file FILE, FLYT_ADMIN_TOKEN_FILE or FLYT_ADMIN_TOKEN must hold this orchestrator's "
                        "admin_token)\n",
                        m_address));
  auto wrongEnv = flytctl({"status"}, "", {"FLYT_ADMIN_TOKEN=another-secret-0123456789"});
  EXPECT_EQ(wrongEnv.status, 1);
  EXPECT_TRUE(contains(wrongEnv.err, "wrong admin token")) << wrongEnv.err;
  EXPECT_TRUE(matches(orchestratorLog(), R"(refused admin connection from 127\.0\.0\.1:\d+: missing token)"))
      << orchestratorLog();
  EXPECT_TRUE(matches(orchestratorLog(), R"(refused admin connection from 127\.0\.0\.1:\d+: wrong token)"))
      << orchestratorLog();

  // The right token, three ways: --token-file, FLYT_ADMIN_TOKEN_FILE, FLYT_ADMIN_TOKEN.
  auto added = flytctl({"--token-file", admin, "--json", "tenant", "add", "vm1", "--sm", "10", "--memory", "1GiB"});
  ASSERT_EQ(added.status, 0) << added.err;
  const auto at = added.out.find("\"token\":\"");
  ASSERT_NE(at, std::string::npos) << added.out;
  const std::string vm1Token = added.out.substr(at + 9, 32);
  auto listed = flytctl({"tenant", "list"}, "", {"FLYT_ADMIN_TOKEN_FILE=" + admin});
  EXPECT_EQ(listed.status, 0) << listed.err;
  EXPECT_TRUE(contains(listed.out, "vm1")) << listed.out;
  EXPECT_EQ(flytctl({"status"}, "", {"FLYT_ADMIN_TOKEN=" + kAdminSecret}).status, 0);
  // A token file others may read is refused before anything is sent.
  auto open = flytctl({"--token-file", tokenFile("open", kAdminSecret, 0644), "status"});
  EXPECT_EQ(open.status, 2);
  EXPECT_TRUE(contains(open.err, "has mode 0644: others may read it; chmod 600 it")) << open.err;

  // Nodes (no node_token here) and applications need no admin token.
  std::string error;
  m_peer->registerNode("node-a", {{"GPU-a0"}}, flyt::wire::CLUSTER_PROTOCOL_VERSION, &error);
  EXPECT_EQ(error, "");
  EXPECT_TRUE(m_peer->openSession("vm1", vm1Token, "", &error)) << error;
  // An application's connection gets no further than its own calls.
  EXPECT_TRUE(contains(m_peer->addTenantAs(OrchestratorRole::kTenant, "sneaky"), "permission denied"));
  // Claiming admin without the token: refused at the door.
  EXPECT_TRUE(contains(m_peer->tryConnect(OrchestratorRole::kAdmin, ""), "refused this connection"));
}

TEST_F(OrchestratorTest, TenantAndNodeConnectionsCannotCallAdministration) {
  ASSERT_NO_FATAL_FAILURE(start());  // no tokens: which role a connection plays still limits it
  EXPECT_EQ(m_peer->addTenantAs(OrchestratorRole::kTenant, "sneaky"),
            "permission denied: this connection is authenticated as tenant; tenant administration needs the admin "
            "token (flytctl --token-file or FLYT_ADMIN_TOKEN)");
  EXPECT_EQ(m_peer->statusAs(OrchestratorRole::kTenant),
            "permission denied: this connection is authenticated as tenant; the cluster's status needs the admin "
            "token (flytctl --token-file or FLYT_ADMIN_TOKEN)");
  EXPECT_EQ(m_peer->listNodesAs(OrchestratorRole::kNode),
            "permission denied: this connection is authenticated as node; listing nodes needs the admin token "
            "(flytctl --token-file or FLYT_ADMIN_TOKEN)");
  EXPECT_EQ(m_peer->addTenantAs(OrchestratorRole::kNode, "sneaky"),
            "permission denied: this connection is authenticated as node; tenant administration needs the admin "
            "token (flytctl --token-file or FLYT_ADMIN_TOKEN)");
  const auto token = addTenant("vm1", "10", "1GiB");
  m_peer->registerNode("node-a", {{"GPU-a0"}});
  std::string error;
  EXPECT_FALSE(m_peer->openSession("vm1", token, "", &error, OrchestratorRole::kNode));
  EXPECT_EQ(error,
            "permission denied: this connection is authenticated as node; opening a session is for applications "
            "(tenant connections)");
  EXPECT_TRUE(m_peer->openSession("vm1", token, "", &error)) << error;
  EXPECT_FALSE(contains(flytctl({"tenant", "list"}).out, "sneaky"));
  EXPECT_EQ(m_peer->statusAs(OrchestratorRole::kAdmin), "");  // admin needs no token when none is set
  EXPECT_TRUE(matches(orchestratorLog(), R"(refused addTenant to the tenant connection from 127\.0\.0\.1:\d+: permission denied)"))
      << orchestratorLog();
}

TEST_F(OrchestratorTest, NodeWithAWrongNodeTokenCannotRegister) {
  ASSERT_NO_FATAL_FAILURE(start(fmt::format("node_token = \"{}\"\n", kNodeSecret)));
  m_peer.reset();
  m_peer = std::make_unique<NodeStandIn>(m_address, "wrong-node-secret-0123456789");
  std::string error;
  EXPECT_TRUE(m_peer->registerNode("node-x", {{"GPU-x0"}}, flyt::wire::CLUSTER_PROTOCOL_VERSION, &error).empty());
  EXPECT_EQ(error, fmt::format("the orchestrator at tcp://{} refused this connection: wrong node token ([node] "
                               "orchestrator_token_file in node.toml, FLYT_NODE_TOKEN_FILE or FLYT_NODE_TOKEN must "
                               "hold this orchestrator's node_token)",
                               m_address));
  m_peer.reset();
  m_peer = std::make_unique<NodeStandIn>(m_address);
  m_peer->registerNode("node-y", {{"GPU-y0"}}, flyt::wire::CLUSTER_PROTOCOL_VERSION, &error);
  EXPECT_TRUE(contains(error, "refused this connection: the node role needs this orchestrator's node token and the "
                              "connection sent none"))
      << error;
  EXPECT_EQ(flytctl({"node", "list"}).out, "no nodes have registered\n");
  EXPECT_TRUE(matches(orchestratorLog(), R"(refused node connection from 127\.0\.0\.1:\d+: wrong token)"))
      << orchestratorLog();
  EXPECT_TRUE(matches(orchestratorLog(), R"(refused node connection from 127\.0\.0\.1:\d+: missing token)"));

  m_peer.reset();
  m_peer = std::make_unique<NodeStandIn>(m_address, kNodeSecret);
  EXPECT_EQ(m_peer->registerNode("node-a", {{"GPU-a0"}}, flyt::wire::CLUSTER_PROTOCOL_VERSION, &error).size(), 32u)
      << error;
  EXPECT_FALSE(m_peer->heartbeat("node-a", {}).reregister);
  const auto nodes = flytctl({"node", "list"}).out;
  EXPECT_TRUE(contains(nodes, "node-a  up")) << nodes;
  EXPECT_FALSE(contains(nodes, "node-x")) << nodes;
}

TEST_F(OrchestratorTest, GarbageAndSilentPeersAreDroppedWhileOthersAreServed) {
  ASSERT_NO_FATAL_FAILURE(start());
  const auto started = std::chrono::steady_clock::now();
  std::vector<int> silent;
  for (int i = 0; i < 20; ++i) silent.push_back(connectRaw(m_address));
  const int garbage = connectRaw(m_address);
  ASSERT_GE(garbage, 0);
  const std::string request = "GET / HTTP/1.1\r\nHost: orchestrator\r\n\r\n";
  ASSERT_EQ(::write(garbage, request.data(), request.size()), ssize_t(request.size()));
  bool closed = false;
  const auto answer = readUntilClosed(garbage, 2s, &closed);
  ::close(garbage);
  EXPECT_TRUE(closed);
  EXPECT_TRUE(answer.starts_with("FLYTORCH")) << answer;
  EXPECT_TRUE(contains(answer, "this is flyt-orchestrator: a client must start with its connection preamble")) << answer;

  // The silent ones hold nothing: the orchestrator serves others meanwhile.
  auto status = flytctl({"status"});
  EXPECT_EQ(status.status, 0) << status.err;
  for (int fd : silent) {
    ASSERT_GE(fd, 0);
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(started + 8s - std::chrono::steady_clock::now());
    auto greeting = readUntilClosed(fd, std::max(left, 1ms), &closed);
    EXPECT_TRUE(closed) << "a silent peer was not dropped";
    EXPECT_EQ(greeting.size(), 44u);  // the greeting, and nothing after
    ::close(fd);
  }
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_GE(took, 4500ms);  // the 5 s bound, not sooner
  EXPECT_LT(took, 8s);
  EXPECT_TRUE(matches(orchestratorLog(), R"(refused connection from 127\.0\.0\.1:\d+: not a Flyt client: its first bytes are 47 45 54 20 2f 20 48 54)"))
      << orchestratorLog();
  EXPECT_TRUE(matches(orchestratorLog(), R"(refused connection from 127\.0\.0\.1:\d+: no complete preamble within 5000 ms)"));
  EXPECT_EQ(flytctl({"status"}).status, 0);
}

TEST_F(OrchestratorTest, OversizedRequestEndsOnlyItsOwnConnection) {
  ASSERT_NO_FATAL_FAILURE(start());
  const auto token = addTenant("vm1", "10", "1GiB");
  m_peer->registerNode("node-a", {{"GPU-a0"}});
  // A tenant connection needs no secret: it must not make the orchestrator read 16 MiB.
  std::string error;
  EXPECT_FALSE(m_peer->openSession("vm1", std::string(16 << 20, 'x'), "", &error));
  EXPECT_FALSE(error.empty());
  EXPECT_FALSE(contains(error, "wrong token")) << error;  // never got as far as the service
  m_peer.reset();
  m_peer = std::make_unique<NodeStandIn>(m_address);
  EXPECT_TRUE(m_peer->openSession("vm1", token, "", &error)) << error;
  EXPECT_EQ(flytctl({"status"}).status, 0);
}

TEST_F(OrchestratorTest, UnprotectedRolesOnANonLoopbackAddressAreWarnedAboutLoudly) {
  ASSERT_NO_FATAL_FAILURE(start("", 30000, "0.0.0.0:0"));
  EXPECT_TRUE(eventually([&] { return contains(orchestratorLog(), "no node token is set"); }, 5s));
  EXPECT_TRUE(matches(orchestratorLog(), R"(!!! 0\.0\.0\.0:\d+ is reachable from other hosts and no admin token is set: ANYONE who can reach it can administer this cluster)"))
      << orchestratorLog();
  EXPECT_TRUE(contains(orchestratorLog(), "Set [orchestrator] node_token_file (or FLYT_NODE_TOKEN_FILE) !!!"));
  EXPECT_EQ(stop(), 0);
  m_log.clear();

  ASSERT_NO_FATAL_FAILURE(start(fmt::format("admin_token = \"{}\"\nnode_token_file = \"{}\"\n", kAdminSecret,
                                            tokenFile("node", kNodeSecret)),
                                30000, "0.0.0.0:0"));
  EXPECT_TRUE(eventually([&] { return contains(orchestratorLog(), "node connections must prove they hold the node token"); }, 5s))
      << orchestratorLog();
  EXPECT_TRUE(contains(orchestratorLog(), "admin connections must prove they hold the admin token"));
  EXPECT_FALSE(contains(orchestratorLog(), "!!!"));
  EXPECT_FALSE(contains(orchestratorLog(), kAdminSecret));  // secrets are never logged
  EXPECT_EQ(flytctl({"status"}, "", {"FLYT_ADMIN_TOKEN=" + kAdminSecret}).status, 0);
}

TEST(Flytctl, UnreachableOrchestratorFailsWithinSeconds) {
  // Port 1: nothing listens there (it is privileged, and no test serves it).
  const auto started = std::chrono::steady_clock::now();
  Process process({FLYTCTL_PATH, "--orchestrator", "127.0.0.1:1", "tenant", "list"});
  EXPECT_EQ(process.readAll(10s), "");
  auto status = process.wait(10s);
  ASSERT_TRUE(status);
  EXPECT_EQ(WEXITSTATUS(*status), 1);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  EXPECT_EQ(process.stderrText(),
            "flytctl: cannot reach the orchestrator at tcp://127.0.0.1:1: connection refused (is flyt-orchestrator "
            "running? --orchestrator / FLYT_ORCHESTRATOR)\n");
}
