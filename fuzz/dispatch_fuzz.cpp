// libFuzzer target: the worker's message decoding and dispatch. The input is one Cap'n Proto
// Envelope in standard serialisation (segment table + segments, as FlatArrayMessageReader reads
// it); any bytes after the message are its inline payload. It is handed to the SessionHandler a
// worker would run (GPU stand-in, 64 MiB memory quota so that absurd cudaMalloc sizes are refused
// rather than allocated) over an in-process loopback channel, and the replies are drained.
//
// One handler serves the whole run, as one worker serves one session: state that a message leaves
// behind (allocations, streams, modules) is what the next message meets. A Goodbye starts a new
// session.
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>

#include "flyt/backend/session_handler.hpp"
#include "flyt/transport/loopback_channel.hpp"

namespace {

namespace fb = flyt::backend;
namespace ft = flyt::transport;

// An Incoming over the fuzz bytes: the words are copied so that they are aligned.
class FuzzBody final : public ft::Incoming::Body {
 public:
  FuzzBody(kj::Array<capnp::word> words, std::size_t bytes) : m_words(kj::mv(words)) {
    m_reader = std::make_unique<capnp::FlatArrayMessageReader>(m_words.asPtr());
    const auto* end = reinterpret_cast<const std::byte*>(m_reader->getEnd());
    const auto* begin = reinterpret_cast<const std::byte*>(m_words.begin());
    const auto used = static_cast<std::size_t>(end - begin);
    if (used < bytes) m_payload = {end, bytes - used};
  }
  capnp::MessageReader& reader() override { return *m_reader; }
  std::span<const std::byte> payload() const override { return m_payload; }

 private:
  kj::Array<capnp::word> m_words;
  std::unique_ptr<capnp::FlatArrayMessageReader> m_reader;
  std::span<const std::byte> m_payload;
};

struct Session {
  std::unique_ptr<ft::Channel> client;
  std::unique_ptr<ft::Channel> server;
  std::unique_ptr<fb::SessionHandler> handler;
};

std::unique_ptr<Session> openSession() {
  auto session = std::make_unique<Session>();
  auto [client, server] = ft::makeLoopbackPair();
  session->client = std::move(client);
  session->server = std::move(server);
  fb::SessionOptions options;
  options.executor = fb::ExecutorKind::kStandIn;
  options.captureOutput = false;
  options.limits.memoryBytes = 64ULL << 20;
  ft::HelloInfo hello{.protocolVersion = 1, .sessionId = 0xf022, .clientName = "dispatch_fuzz", .pid = 1};
  auto made = fb::makeSessionHandler(hello, options);
  if (!made) __builtin_trap();  // the stand-in is always available
  session->handler = std::move(*made);
  return session;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  ::setenv("FLYT_LOG", "off", 0);  // a warning per refused message would drown libFuzzer's output
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static std::unique_ptr<Session> session = openSession();
  if (size < sizeof(capnp::word)) return 0;
  auto words = kj::heapArray<capnp::word>((size + sizeof(capnp::word) - 1) / sizeof(capnp::word));
  std::memset(words.begin(), 0, words.size() * sizeof(capnp::word));
  std::memcpy(words.begin(), data, size);
  // A segment table that does not fit is capnp's own refusal (the channels check it before the
  // handler sees a message); only messages that were read reach the handler.
  std::unique_ptr<FuzzBody> body;
  kj::Maybe<kj::Exception> refused =
      kj::runCatchingExceptions([&] { body = std::make_unique<FuzzBody>(kj::mv(words), size); });
  if (refused != nullptr || !body) return 0;
  ft::Incoming incoming(std::move(body));
  auto state = session->handler->handle(incoming, *session->server);
  while (session->client->receive(std::chrono::milliseconds(0))) {
  }
  if (state && *state == fb::SessionState::kEnded) session = openSession();
  return 0;
}
