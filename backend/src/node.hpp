// flyt-node's serving core: listeners on shm://<name> and (optionally) tcp://host:port, one
// flyt-worker process per session, and the reaping and stopping of those workers.
//
// Process model: a client connects to the node and says Hello; the node starts a worker for that
// session on a private endpoint (shm://<name>-w<session id hex>, or tcp://<listener host>:0), waits
// until the worker listens, and answers Welcome with that endpoint as the redirect. The client then
// talks to its worker only (transport::openSession follows the redirect); the node keeps no channel
// to the session. A worker exits when its session ends or its client dies; the node reaps it and
// logs the session's end.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "flyt/transport/config.hpp"
#include "flyt/transport/error.hpp"
#include "node_config.hpp"

namespace flyt::backend {

struct NodeOptions {
  NodeConfig node;
  transport::TransportConfig transport;
  std::string workerPath;  // the flyt-worker executable
  std::string configPath;  // node.toml, passed on to the workers; empty for none
};

class Node {
 public:
  // Sweeps stale region segments, starts an embedded RouDi unless one runs, listens, and starts
  // accepting. Fails (having stopped whatever it started) when a listener cannot be opened or the
  // worker executable is missing.
  [[nodiscard]] static transport::Result<std::unique_ptr<Node>> start(NodeOptions options);

  // Stops the node (see stop()).
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // The endpoints served, shm first, TCP with its real port.
  [[nodiscard]] std::vector<std::string> endpoints() const;

  // Stops accepting, finishes or abandons handshakes in flight (each bounded by connectTimeout),
  // sends SIGTERM to every worker, SIGKILL to those still alive after 2 s, reaps them all, and
  // stops the embedded RouDi last. Idempotent; call from one thread.
  void stop();

  struct Impl;

 private:
  explicit Node(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> m_impl;
};

}  // namespace flyt::backend
