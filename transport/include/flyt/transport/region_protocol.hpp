// The data region's two messages (schema/session.capnp: RegionUpdate, RegionAck), one function per
// side, so that the client session and the worker speak them the same way.
//
//   client  announceSegment: sends RegionUpdate.added = [segment] and waits for the RegionAck. The
//           caller must be the only one receiving on the channel meanwhile, and must have no reply
//           outstanding (the ack has to be the next message the server sends).
//   server  answerRegionUpdate: attaches every added segment in order (the AttachedRegion's hooks
//           register it), detaches every removed one, and answers added segments with one RegionAck
//           (removals alone get no ack).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

#include "flyt/transport/channel.hpp"
#include "flyt/transport/data_region.hpp"
#include "flyt/wire/session.capnp.h"

namespace flyt::transport {

// kUnavailable when the server could not map or register the segment (its message says why), a
// channel error when the session broke, kTimeout when no ack came within `timeout`, kMalformed
// when something other than a RegionAck arrived.
[[nodiscard]] Result<void> announceSegment(Channel& channel, const SegmentView& segment,
                                           std::chrono::milliseconds timeout);

// Called for each segment attached by answerRegionUpdate (e.g. to remember its kind).
using SegmentAttached = std::function<void(const SegmentView&)>;

// An error only when the ack could not be sent; a segment that fails its checks (or its hook) is
// logged, reported to the client in the ack (status malformed) and ends the processing of `added`.
[[nodiscard]] Result<void> answerRegionUpdate(wire::RegionUpdate::Reader update, AttachedRegion& region,
                                              Channel& channel, const SegmentAttached& attached = {});

}  // namespace flyt::transport
