// Pageable host/device copies cut into chunks and pipelined through a session, for both of Flyt's
// client libraries (the runtime's memcpy.cpp and the driver's copies.cpp), which differ only in
// the method and the arguments of each chunk's call.
//
//   staged   On shared memory with a data region: each chunk goes through a slot of the region's
//            staging ring. Host-to-device: the client fills slot k+1 (several threads for large
//            slots) while the worker DMAs slot k. Device-to-host: the client asks for up to one
//            ring's worth of slots ahead and drains slot k while the worker fills the next ones.
//            Each slot is one call with a reply, which is when the slot is free again.
//   inline   TCP (or shm without a region, or small copies): the bytes travel with the messages, in
//            chunks of at most one staging slot, pipelined the same way (the worker receives a TCP
//            payload straight into a page-locked buffer).
// The worker finishes each chunk before answering it, so a copy is complete when it returns.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <expected>
#include <optional>
#include <span>
#include <vector>

#include "parallel_copy.hpp"
#include "session_client.hpp"

namespace flyt::interpose {

// Copies smaller than this travel inline even where a staging ring exists: one message is cheaper
// than a slot's bookkeeping.
inline constexpr std::size_t kStagedMinBytes = 256 << 10;

namespace pipelined {

// How a pageable copy is cut: chunks of `chunk` bytes, at most `depth` in flight, through `ring`
// (null: inline payloads).
struct Plan {
  transport::SlotRing* ring = nullptr;
  std::size_t chunk = 0;
  std::size_t depth = 1;
};

template <class Session>
Plan planFor(Session& session, std::size_t count) {
  const auto& config = session.config();
  auto* region = count >= kStagedMinBytes ? session.region() : nullptr;
  if (region != nullptr) return {&region->ring(), region->ring().slotBytes(), region->ring().slotCount()};
  // Leave room in the payload limit for nothing but the bytes: the message itself is separate.
  const std::size_t limit = std::max<std::size_t>(session.maxPayloadBytes(), 4096);
  return {nullptr, std::min<std::size_t>(limit, std::max<std::uint64_t>(config.regionSlotBytes, 4096)),
          std::max<std::size_t>(config.regionSlots, 1)};
}

// One chunk in flight: its reply is still owed.
struct InFlight {
  std::uint64_t sequence;
  std::optional<transport::Slot> slot;
  std::size_t offset;
  std::size_t bytes;
};

}  // namespace pipelined

// Host-to-device. `argsFor(offset, bytes)` gives the arguments of the chunk at `offset`; `unknown`
// is the error for a ring that has no free slot (which cannot happen: every slot not in flight is
// released). Returns the first chunk's error, the session's success value when all succeeded.
template <class Session, class Method, class Error, class ArgsFor>
Error pipelinedToDevice(Session& session, Method method, const ArgsFor& argsFor, const std::byte* src,
                        std::size_t count, Error success, Error unknown) {
  using namespace std::chrono_literals;
  const pipelined::Plan plan = pipelined::planFor(session, count);
  const unsigned threads = session.config().copyThreads;
  std::deque<pipelined::InFlight> inFlight;
  Error first = success;
  auto retire = [&] {
    const pipelined::InFlight done = inFlight.front();
    inFlight.pop_front();
    const Error error = session.await(done.sequence).error;
    if (done.slot) (void)plan.ring->release(done.slot->index);
    if (first == success) first = error;
  };
  for (std::size_t done = 0; done < count && first == success;) {
    if (inFlight.size() >= plan.depth) {
      retire();
      continue;
    }
    const std::size_t n = std::min(plan.chunk, count - done);
    const std::vector<std::byte> args = argsFor(done, n);
    std::expected<std::uint64_t, Error> sequence;
    std::optional<transport::Slot> slot;
    if (plan.ring != nullptr) {
      auto acquired = plan.ring->acquire(0ms);
      if (!acquired) {
        first = unknown;
        break;
      }
      slot = *acquired;
      parallelCopy(slot->bytes.data(), src + done, n, threads);
      sequence = session.submit(method, args, {}, RegionBulk{slot->segment, slot->offset, n});
    } else {
      sequence = session.submit(method, args, {src + done, n});
    }
    if (!sequence) {
      if (slot) (void)plan.ring->release(slot->index);
      first = sequence.error();
      break;
    }
    inFlight.push_back({*sequence, slot, done, n});
    done += n;
  }
  while (!inFlight.empty()) retire();
  return first;
}

// Device-to-host, the same way; the bytes are in `dst` when it returns.
template <class Session, class Method, class Error, class ArgsFor>
Error pipelinedToHost(Session& session, Method method, const ArgsFor& argsFor, std::byte* dst, std::size_t count,
                      Error success, Error unknown) {
  using namespace std::chrono_literals;
  const pipelined::Plan plan = pipelined::planFor(session, count);
  const unsigned threads = session.config().copyThreads;
  std::deque<pipelined::InFlight> inFlight;
  Error first = success;
  std::size_t requested = 0;
  auto request = [&] {
    const std::size_t n = std::min(plan.chunk, count - requested);
    const std::vector<std::byte> args = argsFor(requested, n);
    std::optional<transport::Slot> slot;
    std::expected<std::uint64_t, Error> sequence;
    if (plan.ring != nullptr) {
      auto acquired = plan.ring->acquire(0ms);
      if (!acquired) {
        first = unknown;
        return;
      }
      slot = *acquired;
      sequence = session.submit(method, args, {}, RegionBulk{slot->segment, slot->offset, n});
    } else {
      sequence = session.submit(method, args);
    }
    if (!sequence) {
      if (slot) (void)plan.ring->release(slot->index);
      first = sequence.error();
      return;
    }
    inFlight.push_back({*sequence, slot, requested, n});
    requested += n;
  };
  while (requested < count && inFlight.size() < plan.depth && first == success) request();
  while (!inFlight.empty()) {
    const pipelined::InFlight done = inFlight.front();
    inFlight.pop_front();
    std::span<std::byte> target(dst + done.offset, done.bytes);
    const Error error = done.slot ? session.await(done.sequence).error : session.await(done.sequence, target).error;
    if (error == success && first == success && done.slot) {
      parallelCopy(target.data(), done.slot->bytes.data(), done.bytes, threads);
    }
    if (done.slot) (void)plan.ring->release(done.slot->index);
    if (first == success) first = error;
    if (first == success && requested < count) request();
  }
  return first;
}

}  // namespace flyt::interpose
