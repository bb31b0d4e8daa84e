#include "flyt/transport/loopback_channel.hpp"

#include <capnp/message.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>

#include <fmt/format.h>

namespace flyt::transport {
namespace {

constexpr std::chrono::microseconds kSpin{50};

struct Item {
  std::unique_ptr<capnp::MallocMessageBuilder> builder;
  std::vector<std::byte> payload;
};

// One direction of the pair.
struct Queue {
  std::mutex mutex;
  std::condition_variable ready;
  std::deque<Item> items;
  std::atomic<std::size_t> pending{0};  // items.size(), readable without the lock
  bool senderGone = false;
  bool receiverGone = false;
};

class LoopbackBody final : public Incoming::Body {
 public:
  explicit LoopbackBody(Item item)
      : m_item(std::move(item)),
        m_reader(std::make_unique<capnp::SegmentArrayMessageReader>(
            m_item.builder->getSegmentsForOutput())) {}
  capnp::MessageReader& reader() override { return *m_reader; }
  std::span<const std::byte> payload() const override { return m_item.payload; }

 private:
  Item m_item;
  // Held by pointer: capnp readers have noexcept(false) destructors.
  std::unique_ptr<capnp::SegmentArrayMessageReader> m_reader;
};

class LoopbackChannel final : public Channel {
 public:
  LoopbackChannel(std::shared_ptr<Queue> out, std::shared_ptr<Queue> in, TransportConfig config)
      : m_out(std::move(out)), m_in(std::move(in)), m_config(config) {}

  ~LoopbackChannel() override {
    for (auto* queue : {m_out.get(), m_in.get()}) {
      std::lock_guard lock(queue->mutex);
      (queue == m_out.get() ? queue->senderGone : queue->receiverGone) = true;
      queue->ready.notify_all();
    }
  }

  Result<void> send(BuildMessage build, std::span<const std::byte> payload) override {
    if (payload.size() > maxPayloadBytes()) {
      return fail(Errc::kTooLarge, fmt::format("payload of {} bytes exceeds the {}-byte limit",
                                               payload.size(), maxPayloadBytes()));
    }
    Item item{std::make_unique<capnp::MallocMessageBuilder>(), {payload.begin(), payload.end()}};
    build(*item.builder);
    const auto bytes = item.builder->sizeInWords() * sizeof(capnp::word);
    if (bytes > m_config.maxMessageBytes) {
      return fail(Errc::kTooLarge, fmt::format("message of {} bytes exceeds the {}-byte limit",
                                               bytes, m_config.maxMessageBytes));
    }
    std::lock_guard lock(m_out->mutex);
    if (m_out->receiverGone) return fail(Errc::kDisconnected, "loopback peer is gone");
    m_out->items.push_back(std::move(item));
    m_out->pending.fetch_add(1, std::memory_order_release);
    m_out->ready.notify_one();
    return {};
  }

  Result<Incoming> receive(std::chrono::milliseconds timeout) override {
    // Spin a little before sleeping: a condition-variable wake-up costs tens of microseconds, more
    // than the round trip this channel serves as a baseline for.
    const auto spinUntil = std::chrono::steady_clock::now() + std::min<std::chrono::microseconds>(timeout, kSpin);
    while (m_in->pending.load(std::memory_order_acquire) == 0 &&
           std::chrono::steady_clock::now() < spinUntil) {
    }
    std::unique_lock lock(m_in->mutex);
    const bool got = m_in->ready.wait_for(
        lock, timeout, [&] { return !m_in->items.empty() || m_in->senderGone; });
    if (!m_in->items.empty()) {
      Item item = std::move(m_in->items.front());
      m_in->items.pop_front();
      m_in->pending.fetch_sub(1, std::memory_order_release);
      return Incoming(std::make_unique<LoopbackBody>(std::move(item)));
    }
    if (m_in->senderGone) return fail(Errc::kDisconnected, "loopback peer is gone");
    (void)got;
    return fail(Errc::kTimeout, fmt::format("no message on loopback within {} ms", timeout.count()));
  }

  std::size_t maxPayloadBytes() const override { return m_config.maxPayloadBytes; }
  std::string describe() const override { return "loopback"; }

 private:
  std::shared_ptr<Queue> m_out;
  std::shared_ptr<Queue> m_in;
  TransportConfig m_config;
};

}  // namespace

std::pair<std::unique_ptr<Channel>, std::unique_ptr<Channel>> makeLoopbackPair(
    const TransportConfig& config) {
  auto ab = std::make_shared<Queue>();
  auto ba = std::make_shared<Queue>();
  return {std::make_unique<LoopbackChannel>(ab, ba, config),
          std::make_unique<LoopbackChannel>(ba, ab, config)};
}

}  // namespace flyt::transport
