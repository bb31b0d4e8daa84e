#include "flyt/transport/data_region.hpp"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <sstream>
#include <thread>

#include "region_test_util.hpp"

using namespace std::chrono_literals;
namespace ft = flyt::transport;
using ft::Errc;
using flyt::test::readAll;
using flyt::test::regionFilesOf;
using flyt::test::writeAll;

namespace {

std::uint64_t sessionCounter = 0x5e55'0000'0000ULL;
std::uint64_t nextSession() { return ++sessionCounter; }

ft::TransportConfig smallRing() {
  ft::TransportConfig config;
  config.regionSlots = 4;
  config.regionSlotBytes = 64 << 10;
  return config;
}

// A peer process started by fork+exec, talking over one end of a socketpair.
struct Peer {
  pid_t pid = -1;
  int fd = -1;

  static Peer spawn(std::vector<std::string> args) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
      return {};
    }
    const int childFd = ::dup(fds[1]);  // dup'ed descriptors do not inherit FD_CLOEXEC
    args.insert(args.begin() + 1, std::to_string(childFd));
    args.insert(args.begin(), REGION_PEER_PATH);
    std::vector<char*> argv;
    for (auto& a : args) {
      argv.push_back(a.data());
    }
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::execv(REGION_PEER_PATH, argv.data());
      ::_exit(127);
    }
    ::close(childFd);
    ::close(fds[1]);
    return {pid, fds[0]};
  }

  void kill() {
    ::kill(pid, SIGKILL);
    waitExit();
  }
  int waitExit() {
    int status = 0;
    ::waitpid(pid, &status, 0);
    ::close(fd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
};

std::string hex(std::uint64_t v) {
  std::ostringstream out;
  out << std::hex << v;
  return out.str();
}

std::vector<std::string> peerArgs(const char* mode, std::uint64_t session, const ft::SegmentInfo& s) {
  return {mode, hex(session), std::to_string(s.id), s.name, std::to_string(s.sizeBytes)};
}

}  // namespace

TEST(DataRegion, StreamsOneGibThroughTheRingToAnotherProcess) {
  const std::uint64_t session = nextSession();
  ft::TransportConfig config;  // 8 slots of 8 MiB
  auto region = ft::DataRegion::create(session, config);
  ASSERT_TRUE(region) << region.error().describe();
  auto& ring = (*region)->ring();
  const ft::SegmentInfo ringInfo = (*region)->segments().at(0);
  Peer reader = Peer::spawn(peerArgs("read-ring", session, ringInfo));
  ASSERT_GT(reader.pid, 0);

  // Acks come back on their own thread, so the writer fills slot k+1 while the reader consumes slot k.
  std::uint64_t result[2] = {0, 0};
  std::thread acks([&] {
    for (std::uint64_t v; readAll(reader.fd, &v, sizeof v);) {
      if (v == flyt::test::kStreamEnd) {
        readAll(reader.fd, result, sizeof result);
        return;
      }
      ASSERT_TRUE(ring.release(static_cast<std::uint32_t>(v)));
    }
  });
  constexpr std::uint64_t kTotal = 1ULL << 30;
  flyt::test::Checksum sum;
  std::uint64_t word = 0;
  std::uint64_t expectedSequence = 0;
  for (std::uint64_t sent = 0; sent < kTotal;) {
    auto slot = ring.acquire(10s);
    ASSERT_TRUE(slot) << slot.error().describe();
    EXPECT_EQ(slot->sequence, expectedSequence++);
    const std::uint64_t length = std::min<std::uint64_t>(slot->bytes.size(), kTotal - sent);
    auto* words = reinterpret_cast<std::uint64_t*>(slot->bytes.data());
    for (std::uint64_t i = 0; i < length / 8; ++i) {
      words[i] = flyt::test::streamWord(word++);
    }
    sum.add(slot->bytes.first(length));
    const flyt::test::SlotFilled msg{slot->offset, length, slot->segment, slot->index};
    ASSERT_TRUE(writeAll(reader.fd, &msg, sizeof msg));
    sent += length;
  }
  const flyt::test::SlotFilled end{0, 0, 0, 0};
  ASSERT_TRUE(writeAll(reader.fd, &end, sizeof end));
  acks.join();
  EXPECT_EQ(reader.waitExit(), 0);
  EXPECT_EQ(result[1], kTotal);
  EXPECT_EQ(result[0], sum.value());
  EXPECT_EQ(ring.inFlight(), 0u);
}

TEST(DataRegion, AttachSideHookSeesEverySegmentAndUnregistersOnTeardown) {
  const std::uint64_t session = nextSession();
  std::vector<ft::SegmentInfo> announced;
  auto region = ft::DataRegion::create(
      session, smallRing(),
      {.hostChunkBytes = 1 << 20, .onCreated = [&](const ft::SegmentView& v) -> ft::Result<void> {
         announced.push_back({v.id, v.kind, std::string(v.name), v.bytes.size()});
         return {};
       }});
  ASSERT_TRUE(region) << region.error().describe();
  ASSERT_TRUE((*region)->hostAllocator().allocate(512 << 10));
  ASSERT_TRUE((*region)->hostAllocator().allocate(2 << 20));
  ASSERT_EQ(announced.size(), 3u);

  std::set<std::uint32_t> mapped;
  std::set<std::uint32_t> unmapped;
  {
    ft::AttachedRegion server(session, {.onMapped = [&](const ft::SegmentView& v) -> ft::Result<void> {
                                          EXPECT_FALSE(v.bytes.empty());
                                          mapped.insert(v.id);
                                          return {};
                                        },
                                        .onUnmapping = [&](const ft::SegmentView& v) {
                                          unmapped.insert(v.id);
                                        }});
    for (const auto& info : announced) {
      auto view = server.attachSegment(info);
      ASSERT_TRUE(view) << view.error().describe();
      ASSERT_TRUE((*region)->handoffComplete(info.id));
    }
    EXPECT_EQ(mapped, (std::set<std::uint32_t>{0, 1, 2}));
    EXPECT_TRUE(unmapped.empty());
    EXPECT_TRUE(regionFilesOf(::getpid()).empty()) << "handoff should have unlinked every name";
  }
  EXPECT_EQ(unmapped, mapped);
}

TEST(DataRegion, FailingRegistrationHookFailsTheAttachWithItsError) {
  const std::uint64_t session = nextSession();
  auto region = ft::DataRegion::create(session, smallRing());
  ASSERT_TRUE(region);
  ft::AttachedRegion server(session, {.onMapped = [](const ft::SegmentView&) -> ft::Result<void> {
                                        return ft::fail(Errc::kUnavailable, "cudaHostRegister failed");
                                      }});
  auto view = server.attachSegment((*region)->segments().at(0));
  ASSERT_FALSE(view);
  EXPECT_EQ(view.error().code, Errc::kUnavailable);
  EXPECT_NE(view.error().message.find("cudaHostRegister failed"), std::string::npos);
  EXPECT_EQ(server.segmentCount(), 0u);
  EXPECT_FALSE(server.resolve(0, ft::kSegmentDataOffset, 1));
}

TEST(DataRegion, FailingCreationHookFailsTheAllocationAndLeavesNoFile) {
  bool refuse = false;
  auto region = ft::DataRegion::create(
      nextSession(), smallRing(), {.onCreated = [&](const ft::SegmentView&) -> ft::Result<void> {
        return refuse ? ft::fail(Errc::kDisconnected, "server gone") : ft::Result<void>{};
      }});
  ASSERT_TRUE(region);
  refuse = true;
  auto p = (*region)->hostAllocator().allocate(4096);
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, Errc::kDisconnected);
  EXPECT_EQ(regionFilesOf(::getpid()).size(), 1u) << "only the ring's file should remain";
}

class DataRegionResolve : public ::testing::Test {
 protected:
  void SetUp() override {
    m_region = *ft::DataRegion::create(m_session, smallRing());
    auto view = m_server.attachSegment(m_region->segments().at(0));
    ASSERT_TRUE(view) << view.error().describe();
    m_size = view->bytes.size();
  }
  std::uint64_t m_session = nextSession();
  std::unique_ptr<ft::DataRegion> m_region;
  ft::AttachedRegion m_server{m_session, {}};
  std::uint64_t m_size = 0;
};

TEST_F(DataRegionResolve, ResolvesASlotToTheBytesTheClientWrote) {
  auto slot = m_region->ring().acquire(1s);
  ASSERT_TRUE(slot);
  std::memset(slot->bytes.data(), 0x7e, slot->bytes.size());
  auto span = m_server.resolve(slot->segment, slot->offset, slot->bytes.size());
  ASSERT_TRUE(span) << span.error().describe();
  EXPECT_NE(span->data(), slot->bytes.data()) << "the server has its own mapping";
  EXPECT_TRUE(std::all_of(span->begin(), span->end(), [](std::byte b) { return b == std::byte{0x7e}; }));
  EXPECT_TRUE(m_server.resolve(0, m_size - 1, 1));
  EXPECT_TRUE(m_server.resolve(0, m_size, 0));
}

TEST_F(DataRegionResolve, RejectsOffsetOutsideTheSegment) {
  auto span = m_server.resolve(0, m_size, 1);
  ASSERT_FALSE(span);
  EXPECT_EQ(span.error().code, Errc::kOutOfRange);
  const auto& msg = span.error().message;
  EXPECT_NE(msg.find("segment 0"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::to_string(m_size)), std::string::npos) << msg;
  EXPECT_FALSE(m_server.resolve(0, m_size + 4096, 0));
}

TEST_F(DataRegionResolve, RejectsLengthPastTheEnd) {
  auto span = m_server.resolve(0, ft::kSegmentDataOffset, m_size - ft::kSegmentDataOffset + 1);
  ASSERT_FALSE(span);
  EXPECT_EQ(span.error().code, Errc::kOutOfRange);
  EXPECT_NE(span.error().message.find("length " + std::to_string(m_size - ft::kSegmentDataOffset + 1)),
            std::string::npos);
}

TEST_F(DataRegionResolve, RejectsOffsetPlusLengthThatWrapsAround) {
  EXPECT_EQ(m_server.resolve(0, ft::kSegmentDataOffset, ~0ULL).error().code, Errc::kOutOfRange);
  EXPECT_EQ(m_server.resolve(0, ~0ULL - 10, 20).error().code, Errc::kOutOfRange);
  EXPECT_EQ(m_server.resolve(0, m_size - 1, ~0ULL - m_size + 2).error().code, Errc::kOutOfRange);
}

TEST_F(DataRegionResolve, RejectsUnknownSegmentAndTheHeaderPage) {
  auto unknown = m_server.resolve(7, ft::kSegmentDataOffset, 1);
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code, Errc::kOutOfRange);
  EXPECT_NE(unknown.error().message.find("segment 7"), std::string::npos);
  EXPECT_EQ(m_server.resolve(0, 0, 64).error().code, Errc::kOutOfRange);
  EXPECT_EQ(m_server.resolve(0, ft::kSegmentDataOffset - 1, 2).error().code, Errc::kOutOfRange);
}

TEST(DataRegion, AttachRejectsAnnouncementsThatDoNotMatchTheSegment) {
  const std::uint64_t session = nextSession();
  auto region = ft::DataRegion::create(session, smallRing());
  ASSERT_TRUE(region);
  const ft::SegmentInfo good = (*region)->segments().at(0);
  ft::AttachedRegion server(session, {});
  auto wrongSize = good;
  wrongSize.sizeBytes += 4096;
  EXPECT_EQ(server.attachSegment(wrongSize).error().code, Errc::kMalformed);
  auto wrongId = good;
  wrongId.id = 3;
  EXPECT_EQ(server.attachSegment(wrongId).error().code, Errc::kMalformed);
  auto foreignName = good;
  foreignName.name = "/iceoryx_mgmt";
  EXPECT_EQ(server.attachSegment(foreignName).error().code, Errc::kMalformed);
  ft::AttachedRegion otherSession(session + 1000, {});
  EXPECT_EQ(otherSession.attachSegment(good).error().code, Errc::kMalformed);
  ASSERT_TRUE(server.attachSegment(good));
  EXPECT_EQ(server.attachSegment(good).error().code, Errc::kInvalidArgument);
  EXPECT_EQ(regionFilesOf(::getpid()).size(), 1u) << "failed attaches must not unlink the creator's name";
}

TEST(DataRegion, TwoRegionsInOneProcessDoNotCollide) {
  const std::uint64_t a = nextSession();
  const std::uint64_t b = nextSession();
  auto ra = ft::DataRegion::create(a, smallRing());
  auto rb = ft::DataRegion::create(b, smallRing());
  ASSERT_TRUE(ra && rb);
  EXPECT_NE((*ra)->segments().at(0).name, (*rb)->segments().at(0).name);
  auto pa = (*ra)->hostAllocator().allocate(100);
  auto pb = (*rb)->hostAllocator().allocate(100);
  ASSERT_TRUE(pa && pb);
  std::memset(*pa, 0xaa, 100);
  std::memset(*pb, 0xbb, 100);
  ft::AttachedRegion sa(a, {});
  ft::AttachedRegion sb(b, {});
  for (const auto& s : (*ra)->segments()) ASSERT_TRUE(sa.attachSegment(s));
  for (const auto& s : (*rb)->segments()) ASSERT_TRUE(sb.attachSegment(s));
  const auto refA = (*ra)->hostAllocator().tryLookup(*pa, 100);
  const auto refB = (*rb)->hostAllocator().tryLookup(*pb, 100);
  ASSERT_TRUE(refA && refB);
  EXPECT_EQ(std::to_integer<int>(sa.resolve(refA->segment, refA->offset, 100)->front()), 0xaa);
  EXPECT_EQ(std::to_integer<int>(sb.resolve(refB->segment, refB->offset, 100)->back()), 0xbb);
  // The same session twice in one process is a caller error, reported rather than sharing files.
  auto again = ft::DataRegion::create(a, smallRing());
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().sysErrno, EEXIST);
}

TEST(DataRegion, HandoffUnlinksTheNameButBothMappingsStayUsable) {
  const std::uint64_t session = nextSession();
  auto region = ft::DataRegion::create(session, smallRing());
  ASSERT_TRUE(region);
  ft::AttachedRegion server(session, {});
  ASSERT_TRUE(server.attachSegment((*region)->segments().at(0)));
  EXPECT_EQ(regionFilesOf(::getpid()).size(), 1u);
  ASSERT_TRUE((*region)->handoffComplete(0));
  ASSERT_TRUE((*region)->handoffComplete(0)) << "handoff is idempotent";
  EXPECT_TRUE(regionFilesOf(::getpid()).empty());
  auto slot = (*region)->ring().acquire(1s);
  ASSERT_TRUE(slot);
  slot->bytes[5] = std::byte{42};
  EXPECT_EQ(std::to_integer<int>((*server.resolve(0, slot->offset, 8))[5]), 42);
  EXPECT_EQ((*region)->handoffComplete(9).error().code, Errc::kInvalidArgument);
}

TEST(DataRegion, KilledCreatorLeavesNoFilesOnceTheServerCleansUp) {
  const std::uint64_t session = nextSession();
  Peer creator = Peer::spawn({"create-hold", hex(session)});
  ASSERT_GT(creator.pid, 0);
  std::string text;
  for (char c; !text.ends_with("end\n") && readAll(creator.fd, &c, 1);) {
    text += c;
  }
  std::istringstream lines(text);
  std::vector<ft::SegmentInfo> infos;
  for (ft::SegmentInfo info; lines >> info.id;) {
    unsigned kind = 0;
    lines >> kind >> info.sizeBytes >> info.name;
    info.kind = static_cast<ft::SegmentKind>(kind);
    infos.push_back(info);
  }
  ASSERT_GE(infos.size(), 3u) << text;
  EXPECT_EQ(regionFilesOf(creator.pid).size(), infos.size());

  auto server = std::make_unique<ft::AttachedRegion>(session, ft::AttachOptions{});
  for (const auto& info : infos) {
    ASSERT_TRUE(server->attachSegment(info)) << info.name;
  }
  const int pid = creator.pid;
  creator.kill();  // before any handoff: every name is still there
  EXPECT_EQ(regionFilesOf(pid).size(), infos.size());
  auto data = server->resolve(1, ft::kSegmentDataOffset, 256 << 10);
  ASSERT_TRUE(data);
  EXPECT_EQ(std::to_integer<int>(data->back()), 0x5a) << "the dead creator's data stays readable";
  server->unlinkNames();  // what the session does on kDisconnected
  EXPECT_TRUE(regionFilesOf(pid).empty());
  EXPECT_EQ(std::to_integer<int>(data->front()), 0x5a) << "mappings outlive the names";
  server.reset();
  EXPECT_TRUE(regionFilesOf(pid).empty());
}

TEST(DataRegion, SweepRemovesSegmentsWhoseCreatorDiedAndKeepsLiveOnes) {
  const std::uint64_t session = nextSession();
  auto mine = ft::DataRegion::create(nextSession(), smallRing());
  ASSERT_TRUE(mine);
  Peer creator = Peer::spawn({"create-hold", hex(session)});
  ASSERT_GT(creator.pid, 0);
  std::string text;
  for (char c; !text.ends_with("end\n") && readAll(creator.fd, &c, 1);) {
    text += c;
  }
  const int pid = creator.pid;
  ASSERT_FALSE(regionFilesOf(pid).empty());
  creator.kill();  // nobody attached: both sides of this session are gone
  auto removed = ft::sweepStaleSegments();
  ASSERT_TRUE(removed) << removed.error().describe();
  EXPECT_TRUE(regionFilesOf(pid).empty());
  EXPECT_GE(removed->size(), 3u);
  EXPECT_EQ(regionFilesOf(::getpid()).size(), 1u) << "a live creator's segment must survive the sweep";
}

TEST(DataRegion, KilledAttacherLeavesNoFilesOnceTheCreatorCleansUp) {
  const std::uint64_t session = nextSession();
  auto region = ft::DataRegion::create(session, smallRing());
  ASSERT_TRUE(region);
  Peer attacher = Peer::spawn(peerArgs("attach-hold", session, (*region)->segments().at(0)));
  ASSERT_GT(attacher.pid, 0);
  char ready = 0;
  ASSERT_TRUE(readAll(attacher.fd, &ready, 1));
  attacher.kill();  // mapped, but the handoff never completed
  EXPECT_EQ(regionFilesOf(::getpid()).size(), 1u);
  auto slot = (*region)->ring().acquire(1s);
  ASSERT_TRUE(slot) << "the creator's mapping is unaffected";
  slot->bytes.back() = std::byte{1};
  region->reset();  // what the session does on kDisconnected
  EXPECT_TRUE(regionFilesOf(::getpid()).empty());
}
