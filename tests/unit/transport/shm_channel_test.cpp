// ShmChannel against a real embedded RouDi and real peer processes (shm_peer). Every case runs
// under the CTest resource lock "roudi"; the process keeps the RouDi it starts until it exits.
#include "flyt/transport/shm_channel.hpp"
#include "host_roudi_lock.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "flyt/wire/session.capnp.h"

using namespace std::chrono_literals;
namespace ft = flyt::transport;
using ft::Errc;
using Clock = std::chrono::steady_clock;

namespace {

ft::TransportConfig testConfig() {
  ft::TransportConfig config;
  config.peerTimeout = 2000ms;
  config.connectTimeout = 2000ms;
  return config;
}

using flyt::test::holdHostRouDiLock;

// The RouDi of this test process, started on first use and kept until exit (iceoryx 2.0 cannot
// re-register a process with a second RouDi).
ft::EmbeddedRouDi& roudi() {
  holdHostRouDiLock();
  static std::unique_ptr<ft::EmbeddedRouDi> instance = [] {
    auto started = ft::EmbeddedRouDi::startIfAbsent(testConfig());
    EXPECT_TRUE(started) << started.error().describe();
    return started ? std::move(*started) : nullptr;
  }();
  return *instance;
}

ft::Endpoint endpoint(const std::string& name) {
  ft::Endpoint ep;
  ep.kind = ft::Endpoint::Kind::kShm;
  ep.name = name + "-" + std::to_string(::getpid());
  return ep;
}

// A peer process. Peers leave by themselves once the test closes their session; the destructor
// waits for that and kills only a peer that is still running after 5 s.
//
// Why peers are killed only while idle: iceoryx 2.0's port locks are not robust mutexes. A peer
// SIGKILLed inside publish() (for instance right after its reply was delivered, while it still holds
// the locks) leaves its publisher port locked for good, and RouDi, which runs in this test process,
// then blocks forever when it reclaims the dead peer's ports. ShmChannel keeps this process from
// touching a dead peer's ports, but cannot keep RouDi from doing so. So echo and serve peers write one
// byte to an "idle" pipe each time they are about to wait for a message (after connecting and after
// each reply), and killWhenIdle() kills them only then, when they hold no iceoryx lock.
class Peer {
 public:
  Peer(const std::string& mode, const std::string& name = "") {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    m_idle = fds[0];
    m_pid = ::fork();
    if (m_pid == 0) {
      ::fcntl(fds[1], F_SETFD, 0);  // the write end survives exec
      const auto idleFd = std::to_string(fds[1]);
      ::execl(FLYT_SHM_PEER_PATH, FLYT_SHM_PEER_PATH, mode.c_str(), name.c_str(), idleFd.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
  }
  ~Peer() {
    if (m_pid > 0 && wait(5s) < 0) kill();
    if (m_idle >= 0) ::close(m_idle);
  }
  // Waits until the peer has reported `idleCount` idle moments in all, then SIGKILLs it there.
  void killWhenIdle(unsigned idleCount) {
    const auto deadline = Clock::now() + 10s;
    while (m_idleSeen < idleCount && Clock::now() < deadline) {
      pollfd p{m_idle, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char bytes[64];
      const auto got = ::read(m_idle, bytes, sizeof(bytes));
      if (got <= 0) break;  // the peer exited
      m_idleSeen += static_cast<unsigned>(got);
    }
    EXPECT_GE(m_idleSeen, idleCount) << "the peer never became idle";
    kill();
  }
  void kill() {
    ::kill(m_pid, SIGKILL);
    ::waitpid(m_pid, nullptr, 0);
    m_pid = -1;
  }
  // Exit status, or -1 when it did not exit within `timeout`.
  int wait(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      int status = 0;
      if (::waitpid(m_pid, &status, WNOHANG) == m_pid) {
        m_pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(5ms);
    }
    return -1;
  }

 private:
  pid_t m_pid = -1;
  int m_idle = -1;
  unsigned m_idleSeen = 0;
};

ft::Result<void> sendCalls(ft::Channel& channel, std::uint64_t firstSeq, unsigned calls,
                           std::span<const std::byte> payload = {}) {
  return channel.send(
      [&](capnp::MessageBuilder& builder) {
        auto list = builder.initRoot<flyt::wire::Envelope>().initBatch().initCalls(calls);
        for (unsigned i = 0; i < calls; ++i) {
          list[i].setSequence(firstSeq + i);
          list[i].setMethod(7);
        }
      },
      payload);
}

ft::Result<void> sendGoodbye(ft::Channel& channel) {
  return channel.send([](capnp::MessageBuilder& b) { b.initRoot<flyt::wire::Envelope>().initGoodbye(); });
}

std::unique_ptr<ft::Channel> acceptOne(ft::Listener& listener) {
  auto channel = listener.accept(5s);
  EXPECT_TRUE(channel) << channel.error().describe();
  return channel ? std::move(*channel) : nullptr;
}

std::vector<std::string> flytShmFiles() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator("/dev/shm")) {
    const auto name = entry.path().filename().string();
    if (name.starts_with("flyt-shm")) names.push_back(name);
  }
  return names;
}

}  // namespace

TEST(ShmChannel, RoundTripsMessagesAndInlinePayloadInOrder) {
  roudi();
  const auto ep = endpoint("roundtrip");
  auto listener = ft::listenShm(ep, testConfig());
  ASSERT_TRUE(listener) << listener.error().describe();
  Peer peer("echo", ep.name);
  auto channel = acceptOne(**listener);
  ASSERT_TRUE(channel);
  EXPECT_EQ(channel->maxPayloadBytes(), testConfig().shmInlinePayloadBytes);

  // Sizes cover every chunk class, the empty payload and the largest inline payload.
  const std::vector<std::size_t> sizes{0, 1, 3000, 5000, 60000, 200000, channel->maxPayloadBytes()};
  std::uint64_t seq = 1;
  for (int round = 0; round < 3; ++round) {
    for (std::size_t size : sizes) {
      std::vector<std::byte> payload(size);
      for (std::size_t i = 0; i < size; ++i) payload[i] = static_cast<std::byte>((i * 7 + seq) & 0xff);
      ASSERT_TRUE(sendCalls(*channel, seq, 2, payload));
      auto in = channel->receive(2s);
      ASSERT_TRUE(in) << in.error().describe();
      auto calls = in->root<flyt::wire::Envelope>().getBatch().getCalls();
      ASSERT_EQ(calls.size(), 2u);
      EXPECT_EQ(calls[0].getSequence(), seq);
      EXPECT_EQ(calls[1].getSequence(), seq + 1);
      ASSERT_EQ(in->payload().size(), size);
      EXPECT_TRUE(std::equal(payload.begin(), payload.end(), in->payload().begin()));
      seq += 2;
    }
  }
  // A message far larger than a small chunk (built across several segments) still arrives whole.
  ASSERT_TRUE(sendCalls(*channel, seq, 3000));
  auto big = channel->receive(2s);
  ASSERT_TRUE(big) << big.error().describe();
  EXPECT_EQ(big->root<flyt::wire::Envelope>().getBatch().getCalls()[2999].getSequence(), seq + 2999);

  std::vector<std::byte> tooLarge(channel->maxPayloadBytes() + 1);
  auto refused = sendCalls(*channel, 1, 1, tooLarge);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::kTooLarge);

  ASSERT_TRUE(sendGoodbye(*channel));
  ASSERT_TRUE(channel->receive(2s));
  EXPECT_EQ(peer.wait(5s), 0);
}

TEST(ShmChannel, ManyBatchesInARowKeepOrder) {
  roudi();
  const auto ep = endpoint("batches");
  auto listener = ft::listenShm(ep, testConfig());
  ASSERT_TRUE(listener) << listener.error().describe();
  Peer peer("count", ep.name);
  auto channel = acceptOne(**listener);
  ASSERT_TRUE(channel);
  const std::vector<std::byte> payload(100, std::byte{0x42});
  // 400 batches without waiting: more than the in-flight window, so the sender must wait for credit.
  for (std::uint64_t batch = 0; batch < 400; ++batch) {
    ASSERT_TRUE(sendCalls(*channel, batch * 5 + 1, 5, payload));
  }
  ASSERT_TRUE(sendGoodbye(*channel));
  auto reply = channel->receive(5s);
  ASSERT_TRUE(reply) << reply.error().describe();
  auto result = reply->root<flyt::wire::Envelope>().getReply().getResults()[0];
  EXPECT_EQ(result.getSequence(), 2000u);
  EXPECT_EQ(result.getStatus(), flyt::wire::TransportStatus::OK);
}

TEST(ShmChannel, ThousandSequencedCallsArriveInOrder) {
  roudi();
  const auto ep = endpoint("thousand");
  auto listener = ft::listenShm(ep, testConfig());
  ASSERT_TRUE(listener) << listener.error().describe();
  Peer peer("count", ep.name);
  auto channel = acceptOne(**listener);
  ASSERT_TRUE(channel);
  for (std::uint64_t seq = 1; seq <= 1000; ++seq) ASSERT_TRUE(sendCalls(*channel, seq, 1));
  ASSERT_TRUE(sendGoodbye(*channel));
  auto reply = channel->receive(5s);
  ASSERT_TRUE(reply) << reply.error().describe();
  auto result = reply->root<flyt::wire::Envelope>().getReply().getResults()[0];
  EXPECT_EQ(result.getSequence(), 1000u);
  EXPECT_EQ(result.getStatus(), flyt::wire::TransportStatus::OK);
}

TEST(ShmChannel, KilledClientIsDisconnectedOnServerAndLeavesNoFiles) {
  roudi();
  const auto ep = endpoint("killclient");
  auto listener = ft::listenShm(ep, testConfig());
  ASSERT_TRUE(listener) << listener.error().describe();
  Peer peer("echo", ep.name);
  auto channel = acceptOne(**listener);
  ASSERT_TRUE(channel);
  ASSERT_TRUE(sendCalls(*channel, 1, 1));
  ASSERT_TRUE(channel->receive(2s));

  peer.killWhenIdle(2);  // after connecting and after its one reply (see Peer)
  const auto start = Clock::now();
  auto in = channel->receive(10s);
  ASSERT_FALSE(in);
  EXPECT_EQ(in.error().code, Errc::kDisconnected) << in.error().describe();
  EXPECT_LT(Clock::now() - start, testConfig().peerTimeout);
  auto sent = sendCalls(*channel, 2, 1);
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error().code, Errc::kDisconnected);
  EXPECT_TRUE(flytShmFiles().empty());
}

TEST(ShmChannel, SendFailsWhenPeerIsGone) {
  roudi();
  const auto ep = endpoint("killserver");
  Peer peer("serve", ep.name);
  // The peer needs a moment to start listening; "no listener" is reported at once, so retry.
  ft::Result<std::unique_ptr<ft::Channel>> channel = ft::fail(Errc::kUnavailable, "not tried");
  for (auto deadline = Clock::now() + 5s; Clock::now() < deadline;) {
    channel = ft::connectShm(ep, testConfig());
    if (channel || channel.error().code != Errc::kUnavailable) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(channel) << channel.error().describe();
  ASSERT_TRUE(sendCalls(**channel, 1, 1));
  ASSERT_TRUE((*channel)->receive(2s));

  peer.killWhenIdle(2);  // after accepting and after its one reply (see Peer)
  const auto start = Clock::now();
  // send() looks for a dead peer at most once a millisecond (shm_channel.cpp,
  // kSendLivenessInterval); a send sooner than that after the last look may still land in the
  // dead peer's lane, and the next receive() reports the loss. Past the interval it fails itself.
  std::this_thread::sleep_for(5ms);
  auto sent = sendCalls(**channel, 2, 1);
  ASSERT_FALSE(sent);
  EXPECT_EQ(sent.error().code, Errc::kDisconnected) << sent.error().describe();
  auto in = (*channel)->receive(10s);
  ASSERT_FALSE(in);
  EXPECT_EQ(in.error().code, Errc::kDisconnected);
  EXPECT_LT(Clock::now() - start, testConfig().peerTimeout);
  EXPECT_TRUE(flytShmFiles().empty());
}

TEST(ShmChannel, SilentPeerTimesOut) {
  roudi();
  const auto ep = endpoint("silent");
  auto listener = ft::listenShm(ep, testConfig());
  ASSERT_TRUE(listener) << listener.error().describe();
  Peer peer("silent", ep.name);
  auto channel = acceptOne(**listener);
  ASSERT_TRUE(channel);
  const auto start = Clock::now();
  auto in = channel->receive(150ms);
  ASSERT_FALSE(in);
  EXPECT_EQ(in.error().code, Errc::kTimeout) << in.error().describe();
  EXPECT_GE(Clock::now() - start, 150ms);
  EXPECT_LT(Clock::now() - start, 1s);
  // A timeout does not break the channel.
  EXPECT_TRUE(sendCalls(*channel, 1, 1));
}

TEST(ShmChunkClasses, PoolsHoldEveryWindowOfShmSessionsSessions) {
  ft::TransportConfig config;
  config.shmSessions = 64;
  const auto classes = ft::shmChunkClasses(config);
  ASSERT_EQ(classes.size(), 4u);
  const std::uint32_t bytes[] = {4096, 65536, (256 + 64) << 10, (1024 + 64) << 10};
  const std::uint32_t windows[] = {32, 4, 2, 1};
  for (std::size_t i = 0; i < classes.size(); ++i) {
    EXPECT_EQ(classes[i].bytes, bytes[i]) << i;
    EXPECT_EQ(classes[i].window, windows[i]) << i;
    EXPECT_EQ(classes[i].count, std::max<std::uint32_t>(2 * windows[i] * 64, i < 2 ? (i == 0 ? 2048 : 256) : 32)) << i;
  }
  EXPECT_GT(ft::shmPoolBytes(config), 250ull << 20);
  EXPECT_LT(ft::shmPoolBytes(config), 280ull << 20);

  // Small sessions counts keep the floors; a small inline limit drops the larger classes.
  config.shmSessions = 1;
  config.shmInlinePayloadBytes = 16 << 10;
  const auto small = ft::shmChunkClasses(config);
  ASSERT_EQ(small.size(), 3u);
  EXPECT_EQ(small[0].count, 2048u);
  EXPECT_EQ(small[1].count, 256u);
  EXPECT_EQ(small[2].bytes, (16u + 64u) << 10);
  EXPECT_EQ(small[2].window, 2u);
}

// One session holds at most its window of chunks of a size its receiver has not released: a
// client flooding 100 KB messages (the 256 KiB + 64 KiB tier, window 2) at a server that keeps
// them gets exactly two through, then one more for each one released, and nothing is lost.
TEST(ShmChannel, ASessionHoldsAtMostItsWindowOfChunksUntilTheReceiverReleasesThem) {
  roudi();
  const auto ep = endpoint("window");
  auto listener = ft::listenShm(ep, testConfig());
  ASSERT_TRUE(listener) << listener.error().describe();
  constexpr std::size_t kBytes = 100000;
  Peer flooder("flood-100000-6", ep.name);
  auto channel = acceptOne(**listener);
  ASSERT_TRUE(channel);
  std::vector<ft::Incoming> held;
  auto check = [&](ft::Incoming& in, std::uint64_t k) {
    EXPECT_EQ(in.root<flyt::wire::Envelope>().getBatch().getCalls()[0].getSequence(), k + 1);
    const auto payload = in.payload();
    ASSERT_EQ(payload.size(), kBytes);
    EXPECT_EQ(payload[0], static_cast<std::byte>(k & 0xff));
    EXPECT_EQ(payload[kBytes - 1], static_cast<std::byte>((k + kBytes - 1) & 0xff));
  };
  for (std::uint64_t k = 0; k < 2; ++k) {
    auto in = channel->receive(3s);
    ASSERT_TRUE(in) << in.error().describe();
    check(*in, k);
    held.push_back(std::move(*in));
  }
  auto third = channel->receive(500ms);
  ASSERT_FALSE(third) << "a third chunk arrived while the window of two was held";
  EXPECT_EQ(third.error().code, Errc::kTimeout);

  held.erase(held.begin());  // releases one chunk: exactly one more comes
  auto next = channel->receive(3s);
  ASSERT_TRUE(next) << next.error().describe();
  check(*next, 2);
  held.push_back(std::move(*next));
  EXPECT_FALSE(channel->receive(300ms));

  held.clear();
  for (std::uint64_t k = 3; k < 6; ++k) {
    auto in = channel->receive(3s);
    ASSERT_TRUE(in) << in.error().describe();
    check(*in, k);
  }
  channel.reset();
  EXPECT_EQ(flooder.wait(5s), 0);
}

// The server side does not wait without bound for an application that keeps its replies: its
// next send of that size fails within peer_timeout_ms with a message that says why.
TEST(ShmChannel, ServerSendFailsWhenTheClientKeepsItsChunks) {
  roudi();
  const auto ep = endpoint("hoard");
  auto listener = ft::listenShm(ep, testConfig());
  ASSERT_TRUE(listener) << listener.error().describe();
  Peer hoarder("hoard", ep.name);
  auto channel = acceptOne(**listener);
  ASSERT_TRUE(channel);
  const std::vector<std::byte> payload(512 << 10, std::byte{7});  // the largest tier, window 1
  ASSERT_TRUE(sendCalls(*channel, 1, 1, payload));
  const auto start = Clock::now();
  auto second = sendCalls(*channel, 2, 1, payload);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::kTimeout);
  EXPECT_NE(second.error().message.find("did not give back"), std::string::npos) << second.error().describe();
  EXPECT_LT(Clock::now() - start, 4s);
  EXPECT_TRUE(sendCalls(*channel, 3, 1));  // small messages still go: other tiers have their own windows
  channel.reset();
  EXPECT_EQ(hoarder.wait(5s), 0);
}

TEST(ShmChannel, ServesOtherSessionsWhileOnePeerMisbehaves) {
  roudi();
  const auto ep = endpoint("misbehave");
  auto listener = ft::listenShm(ep, testConfig());
  ASSERT_TRUE(listener) << listener.error().describe();
  Peer bad("malformed", ep.name);
  Peer badLane("malformed-lane", ep.name);
  Peer badIndex("malformed-index", ep.name);
  Peer good("echo", ep.name);
  Peer dying("echo", ep.name);
  std::vector<std::unique_ptr<ft::Channel>> channels;
  for (int i = 0; i < 5; ++i) {
    channels.push_back(acceptOne(**listener));
    ASSERT_TRUE(channels.back());
  }
  dying.killWhenIdle(1);  // connected, waiting for its first message (see Peer)

  // Each session is probed with one call: the echo session answers, the malformed ones (a garbage
  // chunk named in the lane, a garbage frame in the lane, a lane head past the lane) report kMalformed and stay broken, the dead one reports kDisconnected.
  int echoed = 0, malformed = 0, disconnected = 0;
  for (auto& channel : channels) {
    auto sent = sendCalls(*channel, 1, 1);
    auto in = sent ? channel->receive(3s) : ft::Result<ft::Incoming>(std::unexpected(sent.error()));
    if (in) {
      ++echoed;
      EXPECT_EQ(in->root<flyt::wire::Envelope>().getBatch().getCalls()[0].getSequence(), 1u);
      for (std::uint64_t seq = 2; seq < 50; ++seq) {
        ASSERT_TRUE(sendCalls(*channel, seq, 1));
        auto again = channel->receive(2s);
        ASSERT_TRUE(again) << again.error().describe();
      }
    } else if (in.error().code == Errc::kMalformed) {
      ++malformed;
      auto later = channel->receive(10ms);
      ASSERT_FALSE(later);
      EXPECT_EQ(later.error().code, Errc::kMalformed);
    } else if (in.error().code == Errc::kDisconnected) {
      ++disconnected;
    } else {
      ADD_FAILURE() << in.error().describe();
    }
  }
  EXPECT_EQ(echoed, 1);
  EXPECT_EQ(malformed, 3);
  EXPECT_EQ(disconnected, 1);
  // The listener still accepts new sessions afterwards.
  Peer late("echo", ep.name);
  auto another = acceptOne(**listener);
  ASSERT_TRUE(another);
  ASSERT_TRUE(sendCalls(*another, 1, 1));
  EXPECT_TRUE(another->receive(2s));
}

TEST(ShmChannel, ConnectWithoutListenerFailsWithinConnectTimeout) {
  roudi();
  const auto start = Clock::now();
  auto channel = ft::connectShm(endpoint("nobody"), testConfig());
  ASSERT_FALSE(channel);
  EXPECT_EQ(channel.error().code, Errc::kUnavailable);
  EXPECT_NE(channel.error().message.find("no Flyt listener"), std::string::npos) << channel.error().message;
  EXPECT_LT(Clock::now() - start, testConfig().connectTimeout);
}

TEST(ShmChannel, SecondListenerOnTheSameNameIsRefused) {
  roudi();
  const auto ep = endpoint("twice");
  auto first = ft::listenShm(ep, testConfig());
  ASSERT_TRUE(first) << first.error().describe();
  auto second = ft::listenShm(ep, testConfig());
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::kUnavailable);
}

TEST(ShmChannel, ConnectWithoutRouDiIsUnavailable) {
  holdHostRouDiLock();
  if (ft::rouDiReachable()) GTEST_SKIP() << "a RouDi runs on this host; cannot test its absence";
  const auto start = Clock::now();
  auto channel = ft::connectShm(endpoint("noroudi"), testConfig());
  ASSERT_FALSE(channel);
  EXPECT_EQ(channel.error().code, Errc::kUnavailable);
  auto listener = ft::listenShm(endpoint("noroudi"), testConfig());
  ASSERT_FALSE(listener);
  EXPECT_EQ(listener.error().code, Errc::kUnavailable);
  EXPECT_LT(Clock::now() - start, 500ms);
}

TEST(ShmChannel, StartIfAbsentDoesNotOwnARunningRouDi) {
  roudi();
  auto again = ft::EmbeddedRouDi::startIfAbsent(testConfig());
  ASSERT_TRUE(again) << again.error().describe();
  EXPECT_FALSE((*again)->owns());
  // Another process neither aborts nor claims it.
  Peer probe("probe-roudi");
  EXPECT_EQ(probe.wait(10s), 0);
  EXPECT_TRUE(ft::rouDiReachable());
}
