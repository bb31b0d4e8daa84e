// Peer process for the data-region tests: the "other side" of a session, started by fork+exec.
//
//   region_peer read-ring   <fd> <session> <id> <name> <size>   attach the ring segment, checksum every
//                                                               announced slot, ack it; at the end send
//                                                               kStreamEnd, checksum, byte count
//   region_peer attach-hold <fd> <session> <id> <name> <size>   attach, send one byte, wait to be killed
//   region_peer create-hold <fd> <session>                      create a region with host segments,
//                                                               send their descriptors, wait to be killed
//
// Exit status 0 on success, 2 on bad arguments, 1 on any failure (reason on stderr).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "flyt/transport/data_region.hpp"
#include "region_test_util.hpp"

namespace ft = flyt::transport;
using flyt::test::readAll;
using flyt::test::writeAll;

namespace {

int die(const std::string& what) {
  std::fprintf(stderr, "region_peer: %s\n", what.c_str());
  return 1;
}

ft::SegmentInfo infoFrom(char** argv) {
  return {static_cast<std::uint32_t>(std::stoul(argv[0])), ft::SegmentKind::kStagingRing, argv[1],
          std::stoull(argv[2])};
}

int readRing(int fd, std::uint64_t session, const ft::SegmentInfo& info) {
  ft::AttachedRegion region(session, {});
  if (auto view = region.attachSegment(info); !view) {
    return die(view.error().describe());
  }
  flyt::test::Checksum sum;
  std::uint64_t bytes = 0;
  for (;;) {
    flyt::test::SlotFilled msg{};
    if (!readAll(fd, &msg, sizeof msg)) {
      return die("writer went away");
    }
    if (msg.length == 0) {
      break;
    }
    auto span = region.resolve(msg.segment, msg.offset, msg.length);
    if (!span) {
      return die(span.error().describe());
    }
    sum.add(*span);
    bytes += span->size();
    const std::uint64_t ack = msg.slot;
    if (!writeAll(fd, &ack, sizeof ack)) {
      return die("writer went away");
    }
  }
  const std::uint64_t result[3] = {flyt::test::kStreamEnd, sum.value(), bytes};
  return writeAll(fd, result, sizeof result) ? 0 : 1;
}

int attachHold(int fd, std::uint64_t session, const ft::SegmentInfo& info) {
  ft::AttachedRegion region(session, {});
  if (auto view = region.attachSegment(info); !view) {
    return die(view.error().describe());
  }
  const char ready = 'm';
  (void)writeAll(fd, &ready, 1);
  for (;;) {
    ::pause();
  }
}

int createHold(int fd, std::uint64_t session) {
  ft::TransportConfig config;
  config.regionSlots = 2;
  config.regionSlotBytes = 64 << 10;
  auto region = ft::DataRegion::create(session, config, {.hostChunkBytes = 1 << 20});
  if (!region) {
    return die(region.error().describe());
  }
  for (std::uint64_t bytes : {256ULL << 10, 900ULL << 10, 3ULL << 20}) {
    auto p = (*region)->hostAllocator().allocate(bytes);
    if (!p) {
      return die(p.error().describe());
    }
    std::memset(*p, 0x5a, bytes);
  }
  std::string lines;
  for (const auto& s : (*region)->segments()) {
    lines += std::to_string(s.id) + " " + std::to_string(static_cast<unsigned>(s.kind)) + " " +
             std::to_string(s.sizeBytes) + " " + s.name + "\n";
  }
  lines += "end\n";
  (void)writeAll(fd, lines.data(), lines.size());
  for (;;) {
    ::pause();
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    return 2;
  }
  const std::string mode = argv[1];
  const int fd = std::atoi(argv[2]);
  const std::uint64_t session = std::stoull(argv[3], nullptr, 16);
  if (mode == "read-ring" && argc == 7) {
    return readRing(fd, session, infoFrom(argv + 4));
  }
  if (mode == "attach-hold" && argc == 7) {
    return attachHold(fd, session, infoFrom(argv + 4));
  }
  if (mode == "create-hold" && argc == 4) {
    return createHold(fd, session);
  }
  return 2;
}
