// The serving side of one session's data region, for both workers (the runtime's dispatcher and
// the driver session): the segments the client announces are mapped and registered with the GPU
// (`Register`, `Unregister` are each API's host-memory registration), and a bulk reference into
// them resolves, bounds-checked, to the bytes and whether they are the application's pinned memory
// (which outlives a call: a copy naming it need not be waited for) or a staging slot (reused once
// the call is answered).
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "flyt/transport/channel.hpp"
#include "flyt/transport/data_region.hpp"
#include "flyt/transport/log.hpp"
#include "flyt/transport/region_protocol.hpp"
#include "flyt/wire/session.capnp.h"

namespace flyt::backend {

class SessionRegion {
 public:
  using Register = std::function<bool(void*, std::size_t)>;  // true: registered
  using Unregister = std::function<void(void*)>;

  SessionRegion(std::uint64_t sessionId, Register registerMemory, Unregister unregisterMemory)
      : m_sessionId(sessionId), m_register(std::move(registerMemory)), m_unregister(std::move(unregisterMemory)) {}

  // Answers a RegionUpdate. kMalformed over a channel that shares no host memory (TCP).
  transport::Result<void> update(wire::RegionUpdate::Reader update, transport::Channel& channel) {
    if (!channel.sharesHostMemory()) {
      return transport::fail(transport::Errc::kMalformed,
                             fmt::format("session {:016x}: a data region over {}", m_sessionId, channel.describe()));
    }
    if (!m_region) {
      transport::AttachOptions options;
      options.onMapped = [this](const transport::SegmentView& view) -> transport::Result<void> {
        if (!m_register(view.bytes.data(), view.bytes.size())) {
          return transport::fail(transport::Errc::kUnavailable,
                                 fmt::format("registering {} bytes with the GPU failed", view.bytes.size()));
        }
        return {};
      };
      options.onUnmapping = [this](const transport::SegmentView& view) {
        m_views.erase(view.id);
        m_unregister(view.bytes.data());
      };
      m_region = std::make_unique<transport::AttachedRegion>(m_sessionId, std::move(options));
    }
    return transport::answerRegionUpdate(update, *m_region, channel, [this](const transport::SegmentView& view) {
      m_kinds[view.id] = view.kind;
      m_views[view.id] = view.bytes;
      flyt::logger("worker").debug("session {:016x}: region segment {} mapped and registered ({} bytes)", m_sessionId,
                                   view.id, view.bytes.size());
    });
  }

  struct Bytes {
    std::span<std::byte> bytes;
    bool persists = false;  // the application's pinned memory
  };
  // [offset, offset + length) of segment `segment`; the message says what is wrong otherwise.
  [[nodiscard]] std::expected<Bytes, std::string> resolve(std::uint32_t segment, std::uint64_t offset,
                                                          std::uint64_t length) const {
    if (!m_region) return std::unexpected(fmt::format("a bulk reference to segment {} but no data region was announced", segment));
    auto resolved = m_region->resolve(segment, offset, length);
    if (!resolved) return std::unexpected(resolved.error().message);
    auto kind = m_kinds.find(segment);
    return Bytes{*resolved, kind != m_kinds.end() && kind->second == transport::SegmentKind::kHostMemory};
  }

  // The whole mapping of segment `segment` (header included: what was registered), if it is mapped
  // and holds the application's pinned memory.
  [[nodiscard]] std::optional<std::span<std::byte>> hostMemorySegment(std::uint32_t segment) const {
    auto view = m_views.find(segment);
    auto kind = m_kinds.find(segment);
    if (view == m_views.end() || kind == m_kinds.end() || kind->second != transport::SegmentKind::kHostMemory) {
      return std::nullopt;
    }
    return view->second;
  }

  // Unregisters and unmaps every segment (while the GPU context that registered them lives).
  void reset() { m_region.reset(); }

 private:
  std::uint64_t m_sessionId;
  Register m_register;
  Unregister m_unregister;
  // Mapped segments, whole: declared before m_region, whose destructor still unmaps (onUnmapping).
  std::map<std::uint32_t, std::span<std::byte>> m_views;
  std::unique_ptr<transport::AttachedRegion> m_region;  // once the client announces a segment
  std::map<std::uint32_t, transport::SegmentKind> m_kinds;
};

}  // namespace flyt::backend
