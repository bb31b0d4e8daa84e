#include "raw_session.hpp"

#include <fmt/format.h>

#include <fstream>
#include <iterator>

namespace flyt::test {

using namespace std::chrono_literals;

std::ostream& operator<<(std::ostream& os, const Answer& a) {
  return os << "error " << a.error << " status " << static_cast<int>(a.status) << " (" << a.detail << ")";
}

std::vector<std::byte> concat(std::vector<std::byte> a, std::span<const std::byte> b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

RawSession::RawSession(const std::string& endpoint, const transport::TransportConfig& config, const char* name,
                       transport::SessionApi api) {
  auto opened = transport::openSession(endpoint, config, name, {}, 0, api);
  if (!opened) {
    ADD_FAILURE() << name << ": " << opened.error().describe();
    return;
  }
  m_session = std::move(*opened);
}

std::string RawSession::hex() const { return fmt::format("{:016x}", m_session.sessionId); }

Answer RawSession::call(std::uint32_t method, const std::vector<std::byte>& args, std::vector<BulkSpec> bulk,
                        std::span<const std::byte> payload) {
  Answer answer;
  if (!open()) return answer;
  auto sent = m_session.channel->send(
      [&](capnp::MessageBuilder& builder) {
        auto batch = builder.initRoot<wire::Envelope>().initBatch();
        batch.setWantsReply(true);
        auto call = batch.initCalls(1)[0];
        call.setSequence(++m_sequence);
        call.setMethod(method);
        call.getArgs().setAs<capnp::Data>(
            kj::arrayPtr(reinterpret_cast<const capnp::byte*>(args.data()), args.size()));
        auto refs = call.initBulk(static_cast<unsigned>(bulk.size()));
        for (unsigned i = 0; i < bulk.size(); ++i) {
          refs[i].setSegment(bulk[i].segment);
          refs[i].setOffset(bulk[i].offset);
          refs[i].setLength(bulk[i].length);
        }
      },
      payload);
  if (!sent) {
    answer.detail = sent.error().describe();
    return answer;
  }
  auto incoming = m_session.channel->receive(5s);
  if (!incoming) {
    answer.detail = incoming.error().describe();
    return answer;
  }
  auto reply = incoming->root<wire::Envelope>().getReply();
  auto last = reply.getResults()[reply.getResults().size() - 1];
  answer.error = last.getCudaError();
  answer.status = last.getStatus();
  answer.detail = last.getDetail().cStr();
  if (last.hasResults()) {
    auto data = last.getResults().getAs<capnp::Data>();
    answer.results.assign(reinterpret_cast<const std::byte*>(data.begin()),
                          reinterpret_cast<const std::byte*>(data.end()));
  }
  answer.payload.assign(incoming->payload().begin(), incoming->payload().end());
  return answer;
}

transport::TransportConfig smallRegionConfig() {
  transport::TransportConfig config;
  config.regionSlots = 2;
  config.regionSlotBytes = 64 << 10;
  return config;
}

void expectRefused(const Answer& a, std::int32_t error, wire::TransportStatus status, const char* what) {
  EXPECT_EQ(a.error, error) << what << ": " << a;
  EXPECT_EQ(a.status, status) << what << ": " << a;
}

std::vector<std::byte> readFile(const char* path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(chars.size());
  std::memcpy(bytes.data(), chars.data(), chars.size());
  return bytes;
}

}  // namespace flyt::test
