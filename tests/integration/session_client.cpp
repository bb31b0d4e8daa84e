// A Flyt client process for the integration tests: opens a session with transport::openSession
// (following the node's redirect to its worker), prints one line
//   "session <id hex> <endpoint served at>"
// on stdout, then waits until stdin reaches EOF (with --hold) and says Goodbye. Exit status 0 when
// the session opened and Goodbye was sent, 1 otherwise (the error on stderr).
//
//   session_client ENDPOINT [--hold]
#include <unistd.h>

#include <fmt/format.h>

#include <cstdio>
#include <string_view>

#include "flyt/transport/config.hpp"
#include "flyt/transport/handshake.hpp"
#include "flyt/wire/session.capnp.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    fmt::print(stderr, "usage: session_client ENDPOINT [--hold]\n");
    return 2;
  }
  const bool hold = argc > 2 && std::string_view(argv[2]) == "--hold";
  auto config = flyt::transport::transportConfigFromEnv();
  if (!config) return 2;
  auto session = flyt::transport::openSession(argv[1], *config, "session_client");
  if (!session) {
    fmt::print(stderr, "session_client: {}\n", session.error().describe());
    return 1;
  }
  fmt::print("session {:016x} {}\n", session->sessionId, session->endpoint);
  std::fflush(stdout);
  if (hold) {
    char buffer[64];
    while (::read(STDIN_FILENO, buffer, sizeof buffer) > 0) {
    }
  }
  auto sent = session->channel->send([](capnp::MessageBuilder& builder) {
    builder.initRoot<flyt::wire::Envelope>().initGoodbye().setReason("session_client is done");
  });
  if (!sent) {
    fmt::print(stderr, "session_client: Goodbye: {}\n", sent.error().describe());
    return 1;
  }
  // Let the worker read Goodbye before the channel's liveness says we are gone.
  ::usleep(100'000);
  return 0;
}
