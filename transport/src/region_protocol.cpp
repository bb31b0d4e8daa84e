#include "flyt/transport/region_protocol.hpp"

#include <fmt/format.h>
#include <kj/exception.h>

#include <string>
#include <vector>

#include "flyt/transport/log.hpp"

namespace flyt::transport {

Result<void> announceSegment(Channel& channel, const SegmentView& segment, std::chrono::milliseconds timeout) {
  auto sent = channel.send([&](capnp::MessageBuilder& builder) {
    auto added = builder.initRoot<wire::Envelope>().initRegionUpdate().initAdded(1)[0];
    added.setId(segment.id);
    added.setKind(segment.kind == SegmentKind::kStagingRing ? wire::SegmentKind::STAGING_RING
                                                            : wire::SegmentKind::HOST_MEMORY);
    added.setName(kj::StringPtr(segment.name.data(), segment.name.size()));
    added.setSize(segment.bytes.size());
  });
  if (!sent) return sent;
  auto incoming = channel.receive(timeout);
  if (!incoming) return std::unexpected(std::move(incoming.error()));
  Result<void> outcome = fail(Errc::kMalformed, "expected a RegionAck");
  kj::Maybe<kj::Exception> problem = kj::runCatchingExceptions([&] {
    auto envelope = incoming->root<wire::Envelope>();
    if (!envelope.isRegionAck()) return;
    auto ack = envelope.getRegionAck();
    bool mapped = false;
    for (auto id : ack.getMapped()) mapped = mapped || id == segment.id;
    if (ack.getStatus() == wire::TransportStatus::OK && mapped) {
      outcome = {};
    } else {
      outcome = fail(Errc::kUnavailable, fmt::format("the server did not map segment {} ({}): {}", segment.id,
                                                     segment.name, ack.getMessage().cStr()));
    }
  });
  if (problem != nullptr) return fail(Errc::kMalformed, "undecodable RegionAck");
  return outcome;
}

Result<void> answerRegionUpdate(wire::RegionUpdate::Reader update, AttachedRegion& region, Channel& channel,
                                const SegmentAttached& attached) {
  for (auto id : update.getRemoved()) (void)region.detachSegment(id);
  if (update.getAdded().size() == 0) return {};
  std::vector<std::uint32_t> mapped;
  std::string problem;
  for (auto info : update.getAdded()) {
    const SegmentInfo wanted{info.getId(),
                             info.getKind() == wire::SegmentKind::STAGING_RING ? SegmentKind::kStagingRing
                                                                               : SegmentKind::kHostMemory,
                             info.getName().cStr(), info.getSize()};
    auto view = region.attachSegment(wanted);
    if (!view) {
      problem = view.error().describe();
      logger("transport").warn("refused region segment {} ({}): {}", wanted.id, wanted.name, problem);
      break;
    }
    if (attached) attached(*view);
    mapped.push_back(wanted.id);
  }
  return channel.send([&](capnp::MessageBuilder& builder) {
    auto ack = builder.initRoot<wire::Envelope>().initRegionAck();
    auto ids = ack.initMapped(static_cast<unsigned>(mapped.size()));
    for (unsigned i = 0; i < mapped.size(); ++i) ids.set(i, mapped[i]);
    ack.setStatus(problem.empty() ? wire::TransportStatus::OK : wire::TransportStatus::MALFORMED);
    if (!problem.empty()) ack.setMessage(problem);
  });
}

}  // namespace flyt::transport
