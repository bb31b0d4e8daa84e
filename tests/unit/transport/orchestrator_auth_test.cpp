// The orchestrator's connection preamble (flyt/transport/orchestrator_auth.hpp) over real TCP
// sockets on loopback: both sides as flyt-orchestrator and its clients run them, and hand-written
// peers (garbage, silence, an impostor, another version) that speak the documented wire format.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kj/async-io.h>

#include <array>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>

#include "flyt/transport/orchestrator_auth.hpp"

namespace {

using namespace std::chrono_literals;
using flyt::transport::acceptPreamble;
using flyt::transport::Errc;
using flyt::transport::offerPreamble;
using flyt::transport::OrchestratorRole;
using flyt::transport::RoleSecrets;
using Clock = std::chrono::steady_clock;

const std::string kAdminSecret = "admin-secret-0123456789abcdef";
const std::string kNodeSecret = "node-secret-0123456789abcdef";

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

class OrchestratorAuth : public ::testing::Test {
 protected:
  struct Pair {
    kj::Own<kj::AsyncIoStream> server;
    kj::Own<kj::AsyncIoStream> client;
  };
  using Verdict = std::expected<OrchestratorRole, flyt::transport::PreambleRefusal>;
  struct Outcome {
    Verdict server;
    flyt::transport::Result<void> client;
  };

  // A connected pair of loopback TCP sockets.
  Pair connect() {
    auto& network = m_io->provider->getNetwork();
    auto listener = network.parseAddress("127.0.0.1", 0).wait(ws())->listen();
    auto accepting = listener->accept();
    auto client = network.parseAddress("127.0.0.1", listener->getPort()).wait(ws())->connect().wait(ws());
    return {accepting.wait(ws()), kj::mv(client)};
  }

  // Both sides of one connection, as the orchestrator and a client run them.
  Outcome run(const RoleSecrets& secrets, OrchestratorRole role, const std::string& secret) {
    auto pair = connect();
    auto server = acceptPreamble(*pair.server, timer(), secrets, 2000ms).eagerlyEvaluate(nullptr);
    auto client = offerPreamble(*pair.client, timer(), role, secret, 2000ms).wait(ws());
    return {server.wait(ws()), std::move(client)};
  }

  // Reads the orchestrator's greeting and its answer to `hello` (which the test wrote by hand).
  std::string answerTo(const std::string& hello, Verdict* verdict, std::chrono::milliseconds bound = 2000ms) {
    auto pair = connect();
    auto server = acceptPreamble(*pair.server, timer(), RoleSecrets{kAdminSecret, ""}, bound).eagerlyEvaluate(nullptr);
    std::array<char, 44> greeting{};
    pair.client->read(greeting.data(), greeting.size()).wait(ws());
    EXPECT_EQ(std::string(greeting.data(), 8), "FLYTORCH");
    if (!hello.empty()) pair.client->write(hello.data(), hello.size()).wait(ws());
    *verdict = server.wait(ws());
    pair.server = nullptr;  // the orchestrator drops a refused connection
    return readAll(*pair.client);
  }

  // Until EOF, or until the connection is reset (the orchestrator closes with our garbage unread,
  // so the kernel resets it after delivering what the orchestrator wrote).
  std::string readAll(kj::AsyncIoStream& stream) {
    std::string text;
    char buffer[4096];
    for (;;) {
      std::size_t got = 0;
      kj::Maybe<kj::Exception> reset =
          kj::runCatchingExceptions([&] { got = stream.tryRead(buffer, 1, sizeof buffer).wait(ws()); });
      if (reset != nullptr || got == 0) return text;
      text.append(buffer, got);
    }
  }

  kj::WaitScope& ws() { return m_io->waitScope; }
  kj::Timer& timer() { return m_io->provider->getTimer(); }

  // On the heap: kj's destructors may throw, gtest's fixture destructor may not.
  std::unique_ptr<kj::AsyncIoContext> m_io = std::make_unique<kj::AsyncIoContext>(kj::setupAsyncIo());
};

std::string hello(std::uint32_t version, std::uint8_t role) {
  std::string bytes = "FLYTPEER";
  for (int i = 0; i < 4; ++i) bytes += char(version >> (8 * i));
  bytes += char(role);
  bytes += std::string(64, '\x5a');  // a nonce and a proof that prove nothing
  return bytes;
}

}  // namespace

TEST_F(OrchestratorAuth, AdminWithTheRightTokenIsAcceptedAndTheOrchestratorProvesItsOwn) {
  auto outcome = run(RoleSecrets{kAdminSecret, kNodeSecret}, OrchestratorRole::kAdmin, kAdminSecret);
  ASSERT_TRUE(outcome.server) << outcome.server.error().reason;
  EXPECT_EQ(*outcome.server, OrchestratorRole::kAdmin);
  EXPECT_TRUE(outcome.client) << outcome.client.error().message;
}

TEST_F(OrchestratorAuth, WrongTokenIsRefusedWithTheReasonOnBothSides) {
  auto outcome = run(RoleSecrets{kAdminSecret, kNodeSecret}, OrchestratorRole::kAdmin, kNodeSecret);
  ASSERT_FALSE(outcome.server);
  EXPECT_EQ(outcome.server.error().role, OrchestratorRole::kAdmin);
  EXPECT_EQ(outcome.server.error().reason, "wrong token");
  ASSERT_FALSE(outcome.client);
  EXPECT_EQ(outcome.client.error().code, Errc::kUnauthenticated);
  EXPECT_EQ(outcome.client.error().message,
            "refused this connection: wrong admin token (flytctl --token-file FILE, FLYT_ADMIN_TOKEN_FILE or "
            "FLYT_ADMIN_TOKEN must hold this orchestrator's admin_token)");

  auto node = run(RoleSecrets{kAdminSecret, kNodeSecret}, OrchestratorRole::kNode, kAdminSecret);
  ASSERT_FALSE(node.server);
  EXPECT_EQ(node.server.error().role, OrchestratorRole::kNode);
  ASSERT_FALSE(node.client);
  EXPECT_TRUE(contains(node.client.error().message, "wrong node token ([node] orchestrator_token_file"))
      << node.client.error().message;
}

TEST_F(OrchestratorAuth, MissingTokenIsRefusedAndSaysWhereToSetIt) {
  auto outcome = run(RoleSecrets{kAdminSecret, ""}, OrchestratorRole::kAdmin, "");
  ASSERT_FALSE(outcome.server);
  EXPECT_EQ(outcome.server.error().reason, "missing token");
  ASSERT_FALSE(outcome.client);
  EXPECT_TRUE(contains(outcome.client.error().message,
                       "the admin role needs this orchestrator's admin token and the connection sent none "
                       "(flytctl --token-file FILE"))
      << outcome.client.error().message;
}

TEST_F(OrchestratorAuth, RolesWithoutASecretNeedNone) {
  // The tenant role never has one; a role the orchestrator has no token for needs none either.
  auto tenant = run(RoleSecrets{kAdminSecret, kNodeSecret}, OrchestratorRole::kTenant, "");
  ASSERT_TRUE(tenant.server);
  EXPECT_EQ(*tenant.server, OrchestratorRole::kTenant);
  EXPECT_TRUE(tenant.client);
  auto node = run(RoleSecrets{kAdminSecret, ""}, OrchestratorRole::kNode, "");
  ASSERT_TRUE(node.server);
  EXPECT_EQ(*node.server, OrchestratorRole::kNode);
  EXPECT_TRUE(node.client);
}

TEST_F(OrchestratorAuth, ClientWithATokenRefusesAnOrchestratorThatCannotProveIt) {
  auto outcome = run(RoleSecrets{}, OrchestratorRole::kAdmin, kAdminSecret);
  EXPECT_TRUE(outcome.server);  // it has nothing to check
  ASSERT_FALSE(outcome.client);
  EXPECT_EQ(outcome.client.error().code, Errc::kUnauthenticated);
  EXPECT_TRUE(contains(outcome.client.error().message,
                       "it did not prove it holds the admin token this client has: it has no admin_token configured"))
      << outcome.client.error().message;
}

TEST_F(OrchestratorAuth, ClientDetectsAnImpostorThatAcceptsEverything) {
  auto pair = connect();
  auto client = offerPreamble(*pair.client, timer(), OrchestratorRole::kNode, kNodeSecret, 2000ms).eagerlyEvaluate(nullptr);
  std::string greeting = "FLYTORCH";
  greeting += std::string("\x01\x00\x00\x00", 4) + std::string(32, '\x11');
  pair.server->write(greeting.data(), greeting.size()).wait(ws());
  std::array<char, 77> helloBytes{};
  pair.server->read(helloBytes.data(), helloBytes.size()).wait(ws());
  const std::string accept = std::string(1, '\0') + std::string(32, '\x42');
  pair.server->write(accept.data(), accept.size()).wait(ws());
  auto result = client.wait(ws());
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, Errc::kUnauthenticated);
  EXPECT_TRUE(contains(result.error().message, "its proof of the node token is wrong")) << result.error().message;
}

TEST_F(OrchestratorAuth, GarbageIsRefusedAtOnceWithAReadableReason) {
  Verdict verdict;
  const auto started = Clock::now();
  const std::string answer = answerTo("GET / HTTP/1.1\r\n\r\n", &verdict);
  EXPECT_LT(Clock::now() - started, 1s);  // not after the bound: the magic alone decides
  ASSERT_FALSE(verdict);
  EXPECT_FALSE(verdict.error().role.has_value());
  EXPECT_EQ(verdict.error().reason, "not a Flyt client: its first bytes are 47 45 54 20 2f 20 48 54");
  ASSERT_GE(answer.size(), 3u);
  EXPECT_EQ(answer[0], '\x01');
  EXPECT_EQ(std::size_t(std::uint8_t(answer[1])) | std::size_t(std::uint8_t(answer[2])) << 8, answer.size() - 3);
  EXPECT_TRUE(contains(answer, "this is flyt-orchestrator: a client must start with its connection preamble")) << answer;
}

TEST_F(OrchestratorAuth, SilentOrSlowPeerIsDroppedWithinTheBound) {
  Verdict verdict;
  auto started = Clock::now();
  EXPECT_EQ(answerTo("", &verdict, 300ms), "");
  EXPECT_GE(Clock::now() - started, 300ms);
  EXPECT_LT(Clock::now() - started, 2s);
  ASSERT_FALSE(verdict);
  EXPECT_EQ(verdict.error().reason, "no complete preamble within 300 ms");

  // Half a preamble, then nothing: the same.
  started = Clock::now();
  EXPECT_EQ(answerTo(hello(1, 1).substr(0, 20), &verdict, 300ms), "");
  EXPECT_LT(Clock::now() - started, 2s);
  ASSERT_FALSE(verdict);
  EXPECT_EQ(verdict.error().reason, "no complete preamble within 300 ms");
}

TEST_F(OrchestratorAuth, AnotherVersionOrAnUnknownRoleIsRefused) {
  Verdict verdict;
  auto answer = answerTo(hello(2, 1), &verdict);
  ASSERT_FALSE(verdict);
  EXPECT_EQ(verdict.error().reason,
            "the client speaks orchestrator preamble version 2; this orchestrator speaks 1");
  EXPECT_TRUE(contains(answer, "version 2")) << answer;
  answer = answerTo(hello(1, 9), &verdict);
  ASSERT_FALSE(verdict);
  EXPECT_EQ(verdict.error().reason, "unknown role 9");
}

TEST_F(OrchestratorAuth, ClientOfAPeerThatNeverGreetsGivesUpWithinItsBound) {
  auto pair = connect();
  const auto started = Clock::now();
  auto result = offerPreamble(*pair.client, timer(), OrchestratorRole::kTenant, "", 300ms).wait(ws());
  EXPECT_LT(Clock::now() - started, 2s);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, Errc::kTimeout);
  EXPECT_TRUE(contains(result.error().message, "is it a flyt-orchestrator?")) << result.error().message;
}

TEST(OrchestratorSecret, ShortSecretsAndOpenFilesAreRefused) {
  EXPECT_FALSE(flyt::transport::checkOrchestratorSecret("short", "admin_token"));
  EXPECT_EQ(flyt::transport::checkOrchestratorSecret("short", "admin_token").error().message,
            "admin_token is 5 bytes; it must have at least 16 (e.g. `openssl rand -hex 32`)");
  char path[] = "/tmp/flyt-orchestrator-secret-XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  const std::string secret = "0123456789abcdef0123\n";
  ASSERT_EQ(::write(fd, secret.data(), secret.size()), ssize_t(secret.size()));
  ::close(fd);
  ASSERT_EQ(::chmod(path, 0600), 0);
  auto read = flyt::transport::readOrchestratorSecret(path, "node_token_file");
  ASSERT_TRUE(read) << read.error().message;
  EXPECT_EQ(*read, "0123456789abcdef0123");
  ASSERT_EQ(::chmod(path, 0644), 0);
  auto open = flyt::transport::readOrchestratorSecret(path, "node_token_file");
  ASSERT_FALSE(open);
  EXPECT_EQ(open.error().message,
            std::string("node_token_file: '") + path + "' has mode 0644: others may read it; chmod 600 it");
  ::unlink(path);
}
