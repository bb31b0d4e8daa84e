// The other process of shm_channel_test (and a latency probe). Usage: shm_peer <mode> [args]
//   echo <name> [fd]    connect, send every message back (with its payload) until Goodbye/peer gone;
//                       with fd, write one byte to it whenever about to wait for a message (then it
//                       holds no iceoryx lock and may be SIGKILLed safely; see shm_channel_test)
//   count <name>        connect, receive batches until Goodbye, check that call sequence numbers
//                       rise by one from 1, answer one Reply {sequence: last, status ok|malformed},
//                       then wait for the session to close
//   silent <name>       connect, then say nothing (dropping what arrives) until the session closes
//   malformed <name>    connect, publish a garbage chunk into the session's c2s service and name it
//                       in the session's lane, then wait for the session to close
//   malformed-lane <name>  connect, write a garbage frame into the session's lane, then wait for
//                       the session to close
//   malformed-index <name> connect, move the lane's head past what the lane holds, then wait
//   flood-<bytes>-<n> <name>   connect, send n messages with a <bytes>-byte payload (byte i of
//                       message k is (k + i) & 0xff), then drop what arrives until the session closes
//   hoard <name>        connect, receive and keep every message (never releasing its chunk) until the
//                       session closes
//   serve <name> [fd]   listen, accept one session, echo it
//   probe-roudi         EmbeddedRouDi::startIfAbsent: exit 0 when it does not own RouDi, 3 when it does
//   bench <n>           start RouDi if absent, listen, spawn `echo`, time n empty-call round trips and
//                       print median/p90/p99 to stderr
// Exit status 0 on success; diagnostics on stderr, never stdout.
#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "flyt/transport/shm_channel.hpp"
#include "flyt/wire/session.capnp.h"
#include "iceoryx_posh/popo/untyped_publisher.hpp"
#include "shm_session.hpp"

using namespace std::chrono_literals;
namespace ft = flyt::transport;

namespace {

ft::Endpoint shmEndpoint(const std::string& name) {
  ft::Endpoint ep;
  ep.kind = ft::Endpoint::Kind::kShm;
  ep.name = name;
  return ep;
}

int failWith(const char* what, const ft::Error& error) {
  std::fprintf(stderr, "shm_peer: %s: %s\n", what, error.describe().c_str());
  return 2;
}

int echo(ft::Channel& channel, int idleFd = -1) {
  for (;;) {
    if (idleFd >= 0) (void)!::write(idleFd, "i", 1);
    auto in = channel.receive(30s);
    if (!in) return in.error().code == ft::Errc::kDisconnected ? 0 : failWith("receive", in.error());
    auto root = in->root<flyt::wire::Envelope>();
    const bool last = root.isGoodbye();
    auto sent = channel.send([&](capnp::MessageBuilder& b) { b.setRoot(root); }, in->payload());
    if (!sent) return failWith("send", sent.error());
    if (last) return 0;
  }
}

// Drops whatever arrives until the session closes (or 30 s pass), so the peer leaves by itself.
int untilClosed(ft::Channel& channel) {
  for (auto deadline = std::chrono::steady_clock::now() + 30s; std::chrono::steady_clock::now() < deadline;) {
    auto in = channel.receive(1s);
    if (!in && in.error().code != ft::Errc::kTimeout) return 0;
  }
  return 0;
}

int flood(ft::Channel& channel, std::size_t bytes, int messages) {
  std::vector<std::byte> payload(bytes);
  for (int k = 0; k < messages; ++k) {
    for (std::size_t i = 0; i < bytes; ++i) payload[i] = static_cast<std::byte>((k + i) & 0xff);
    auto sent = channel.send(
        [&](capnp::MessageBuilder& b) {
          b.initRoot<flyt::wire::Envelope>().initBatch().initCalls(1)[0].setSequence(std::uint64_t(k) + 1);
        },
        payload);
    if (!sent) return failWith("send", sent.error());
  }
  return untilClosed(channel);
}

int hoard(ft::Channel& channel) {
  std::vector<ft::Incoming> kept;
  for (auto deadline = std::chrono::steady_clock::now() + 30s; std::chrono::steady_clock::now() < deadline;) {
    auto in = channel.receive(1s);
    if (in) {
      kept.push_back(std::move(*in));
    } else if (in.error().code != ft::Errc::kTimeout) {
      return 0;
    }
  }
  return 0;
}

int count(ft::Channel& channel) {
  std::uint64_t expected = 1;
  bool inOrder = true;
  for (;;) {
    auto in = channel.receive(30s);
    if (!in) return failWith("receive", in.error());
    auto root = in->root<flyt::wire::Envelope>();
    if (root.isGoodbye()) break;
    for (auto call : root.getBatch().getCalls()) {
      inOrder = inOrder && call.getSequence() == expected;
      ++expected;
    }
  }
  auto sent = channel.send([&](capnp::MessageBuilder& b) {
    auto result = b.initRoot<flyt::wire::Envelope>().initReply().initResults(1)[0];
    result.setSequence(expected - 1);
    result.setStatus(inOrder ? flyt::wire::TransportStatus::OK : flyt::wire::TransportStatus::MALFORMED);
  });
  if (!sent) return failWith("send", sent.error());
  return untilClosed(channel);
}

// The client-to-server lane of this process's one shm session, found by its memfd's mapping.
flyt::transport::shm::ControlBlock* sessionControl() {
  FILE* maps = std::fopen("/proc/self/maps", "r");
  if (maps == nullptr) return nullptr;
  char line[512];
  void* found = nullptr;
  while (found == nullptr && std::fgets(line, sizeof line, maps) != nullptr) {
    unsigned long begin = 0, end = 0;
    if (std::strstr(line, "memfd:flyt-shm-control") != nullptr && std::sscanf(line, "%lx-%lx", &begin, &end) == 2) {
      found = reinterpret_cast<void*>(begin);
    }
  }
  std::fclose(maps);
  return static_cast<flyt::transport::shm::ControlBlock*>(found);
}

// Appends one record (and `frame`, a multiple of 8 bytes) to the client-to-server lane, as a sender.
bool writeLaneRecord(std::uint32_t kind, const void* frame, std::uint32_t bytes) {
  namespace shm = flyt::transport::shm;
  auto* control = sessionControl();
  if (control == nullptr) return false;
  auto& lane = control->lanes[shm::kClientToServer];
  const std::uint64_t head = lane.head.load();
  std::byte* at = shm::laneBytes(control, shm::kClientToServer) + head % shm::kLaneBytes;
  const shm::LaneRecord record{bytes, kind};
  std::memcpy(at, &record, sizeof record);
  if (bytes > 0) std::memcpy(at + sizeof record, frame, bytes);
  lane.head.store(head + sizeof record + bytes);
  if (lane.waiting.exchange(0) != 0) syscall(SYS_futex, &lane.waiting, FUTEX_WAKE, 1, nullptr, nullptr, 0);
  return true;
}

// A well-formed frame header around a Cap'n Proto segment of garbage pointers: this gets past the
// header checks and must be caught by the message validation.
void garbageFrame(std::uint8_t* bytes, std::size_t size) {
  std::memset(bytes, 0xff, size);
  const std::uint32_t header[6] = {0x54594c46, 1U | (1U << 16), 0, 0, 17, 4};
  std::memcpy(bytes, header, sizeof(header));
}

int malformedLane(ft::Channel& channel) {
  alignas(8) std::uint8_t frame[1024];
  garbageFrame(frame, sizeof frame);
  if (!writeLaneRecord(flyt::transport::shm::kFrame, frame, sizeof frame)) return 2;
  return untilClosed(channel);
}

// A lane head further ahead than the lane holds.
int malformedIndex(ft::Channel& channel) {
  namespace shm = flyt::transport::shm;
  auto* control = sessionControl();
  if (control == nullptr) return 2;
  auto& lane = control->lanes[shm::kClientToServer];
  lane.head.store(lane.head.load() + 2 * shm::kLaneBytes);
  if (lane.waiting.exchange(0) != 0) syscall(SYS_futex, &lane.waiting, FUTEX_WAKE, 1, nullptr, nullptr, 0);
  return untilClosed(channel);
}

int malformed(ft::Channel& channel, const std::string& name) {
  // describe() is "shm://<name>#<session id in hex>"; the client-to-server service is named from it.
  const auto text = channel.describe();
  const auto id = text.substr(text.find('#') + 1);
  const auto event = "c2s." + id;
  iox::popo::PublisherOptions options;  // RouDi matches it to a BLOCK_PRODUCER subscriber only so
  options.subscriberTooSlowPolicy = iox::popo::ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER;
  iox::popo::UntypedPublisher raw({iox::capro::IdString_t(iox::cxx::TruncateToCapacity, "flyt"),
                                   iox::capro::IdString_t(iox::cxx::TruncateToCapacity, name.c_str()),
                                   iox::capro::IdString_t(iox::cxx::TruncateToCapacity, event.c_str())},
                                  options);
  for (int i = 0; i < 500 && !raw.hasSubscribers(); ++i) std::this_thread::sleep_for(10ms);
  auto chunk = raw.loan(1024);
  if (chunk.has_error()) return 2;
  garbageFrame(static_cast<std::uint8_t*>(chunk.value()), 1024);
  raw.publish(chunk.value());
  if (!writeLaneRecord(flyt::transport::shm::kChunk, nullptr, 0)) return 2;
  return untilClosed(channel);
}

int bench(int rounds, const char* self) {
  const ft::TransportConfig config;
  auto roudi = ft::EmbeddedRouDi::startIfAbsent(config);
  if (!roudi) return failWith("roudi", roudi.error());
  auto listener = ft::listenShm(shmEndpoint("flyt-bench"), config);
  if (!listener) return failWith("listen", listener.error());
  const pid_t child = fork();
  if (child == 0) {
    execl(self, self, "echo", "flyt-bench", static_cast<char*>(nullptr));
    _exit(127);
  }
  auto channel = (*listener)->accept(5s);
  if (!channel) return failWith("accept", channel.error());
  std::vector<double> micros;
  micros.reserve(static_cast<std::size_t>(rounds));
  for (int i = 0; i < rounds + 1000; ++i) {  // the first 1000 warm up
    const auto start = std::chrono::steady_clock::now();
    auto sent = (*channel)->send([&](capnp::MessageBuilder& b) {
      auto call = b.initRoot<flyt::wire::Envelope>().initBatch().initCalls(1)[0];
      call.setSequence(static_cast<std::uint64_t>(i) + 1);
      call.setMethod(1);
    });
    if (!sent) return failWith("send", sent.error());
    auto in = (*channel)->receive(2s);
    if (!in) return failWith("receive", in.error());
    if (i >= 1000) {
      micros.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
    }
  }
  (void)(*channel)->send([](capnp::MessageBuilder& b) { b.initRoot<flyt::wire::Envelope>().initGoodbye(); });
  (void)(*channel)->receive(2s);
  waitpid(child, nullptr, 0);
  std::sort(micros.begin(), micros.end());
  const auto at = [&](double q) { return micros[static_cast<std::size_t>(q * (micros.size() - 1))]; };
  std::fprintf(stderr, "shm empty-call round trip over %d rounds: median %.2f us, p90 %.2f us, p99 %.2f us\n",
               rounds, at(0.5), at(0.9), at(0.99));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 64;
  const std::string mode = argv[1];
  const std::string name = argc > 2 ? argv[2] : "";
  const int idleFd = argc > 3 ? std::atoi(argv[3]) : -1;
  ::signal(SIGPIPE, SIG_IGN);  // the test may close the idle pipe first
  ft::TransportConfig config;
  if (mode == "probe-roudi") {
    auto roudi = ft::EmbeddedRouDi::startIfAbsent(config);
    if (!roudi) return failWith("startIfAbsent", roudi.error());
    return (*roudi)->owns() ? 3 : 0;
  }
  if (mode == "bench") return bench(argc > 2 ? std::atoi(argv[2]) : 20000, argv[0]);
  if (mode == "serve") {
    auto listener = ft::listenShm(shmEndpoint(name), config);
    if (!listener) return failWith("listen", listener.error());
    auto channel = (*listener)->accept(10s);
    if (!channel) return failWith("accept", channel.error());
    return echo(**channel, idleFd);
  }
  auto channel = ft::connectShm(shmEndpoint(name), config);
  if (!channel) return failWith("connect", channel.error());
  if (mode == "echo") return echo(**channel, idleFd);
  if (mode == "count") return count(**channel);
  if (mode == "silent") return untilClosed(**channel);
  if (mode == "malformed") return malformed(**channel, name);
  if (mode == "malformed-lane") return malformedLane(**channel);
  if (mode == "malformed-index") return malformedIndex(**channel);
  if (mode == "hoard") return hoard(**channel);
  if (mode.starts_with("flood-")) {
    const auto dash = mode.find('-', 6);
    return flood(**channel, std::stoul(mode.substr(6, dash - 6)), std::stoi(mode.substr(dash + 1)));
  }
  return 64;
}
