// flyt-orchestrator as a real process on a temporary SQLite file, driven by real flytctl processes
// and by an in-test Cap'n Proto client (NodeStandIn) that plays flyt-node's part of the protocol
// (registerNode, heartbeat) and an application's (openSession). The stand-in replaces flyt-node
// only where a real node is not needed to check the orchestrator's decisions; tests/cluster runs
// real nodes.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <capnp/ez-rpc.h>
#include <fmt/format.h>
#include <kj/async-io.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>

#include "flyt/transport/grant.hpp"
#include "flyt/transport/orchestrator_client.hpp"
#include "flyt/wire/cluster.capnp.h"
#include "process_helpers.hpp"

using namespace std::chrono_literals;
using flyt::test::Process;

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
// libcudart) would. Every call is bounded; a refusal comes back as its message.
class NodeStandIn {
 public:
  explicit NodeStandIn(const std::string& address)
      : m_client(address.c_str()), m_main(m_client.getMain<flyt::wire::Orchestrator>()) {}

  std::vector<std::byte> registerNode(const std::string& name, const std::vector<FakeGpu>& gpus,
                                      std::uint32_t version = flyt::wire::CLUSTER_PROTOCOL_VERSION,
                                      std::string* error = nullptr) {
    auto request = m_main.registerNodeRequest();
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
    std::vector<std::byte> key;
    auto failed = send(request, [&](auto& response) {
      auto data = response.getPublicKey();
      key.assign(reinterpret_cast<const std::byte*>(data.begin()), reinterpret_cast<const std::byte*>(data.end()));
    });
    if (error != nullptr) *error = failed;
    return key;
  }

  Orders heartbeat(const std::string& name, const std::vector<std::uint64_t>& live,
                   const std::vector<std::uint64_t>& ended = {}) {
    auto request = m_main.heartbeatRequest();
    auto report = request.initReport();
    report.setName(name);
    auto liveList = report.initLive(unsigned(live.size()));
    for (unsigned i = 0; i < live.size(); ++i) liveList.set(i, live[i]);
    auto endedList = report.initEnded(unsigned(ended.size()));
    for (unsigned i = 0; i < ended.size(); ++i) {
      endedList[i].setSessionId(ended[i]);
      endedList[i].setReason("exited");
    }
    Orders orders;
    auto failed = send(request, [&](auto& response) {
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
                                     std::string* error = nullptr) {
    auto request = m_main.openSessionRequest();
    auto r = request.initRequest();
    r.setTenant(tenant);
    r.setToken(token);
    r.setClientName("orchestrator_test");
    r.setHostId(hostId);
    r.setPid(std::uint32_t(::getpid()));
    Granted granted;
    auto failed = send(request, [&](auto& response) {
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

 private:
  template <class Params, class Results, class Read>
  std::string send(capnp::Request<Params, Results>& request, Read&& read) {
    auto timeout = m_client.getIoProvider().getTimer().afterDelay(5 * kj::SECONDS).then(
        []() -> capnp::Response<Results> { kj::throwFatalException(KJ_EXCEPTION(DISCONNECTED, "no answer within 5 s")); });
    std::string error;
    KJ_IF_MAYBE (e, kj::runCatchingExceptions([&] {
                   auto response = request.send().exclusiveJoin(kj::mv(timeout)).wait(m_client.getWaitScope());
                   read(response);
                 })) {
      error = flyt::transport::plainRpcMessage(e->getDescription().cStr());
    }
    return error;
  }

  capnp::EzRpcClient m_client;
  flyt::wire::Orchestrator::Client m_main;
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
  void start(const std::string& settings = "", int nodeTimeoutMs = 30000) {
    const std::string config = m_dir + "/orchestrator.toml";
    std::ofstream(config) << fmt::format("[orchestrator]\nheartbeat_ms = 100\nnode_timeout_ms = {}\n{}", nodeTimeoutMs,
                                         settings);
    m_orchestrator = std::make_unique<Process>(std::vector<std::string>{
        FLYT_ORCHESTRATOR_PATH, "--config", config, "--listen", "127.0.0.1:0", "--database", database(),
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

  CommandResult flytctl(std::vector<std::string> args, const std::string& address = "") {
    args.insert(args.begin(), {FLYTCTL_PATH, "--orchestrator", address.empty() ? m_address : address});
    Process process(args);
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
  EXPECT_TRUE(flyt::test::eventually([&] { return contains(flytctl({"node", "list"}).out, "node-a  down"); }, 5s));
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
  EXPECT_TRUE(flyt::test::eventually([&] { return flytctl({"session", "list"}).out == "no sessions\n"; }, 5s));
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
