# Flyt cluster protocol, version 1: flyt-orchestrator's Cap'n Proto RPC interface, used by nodes
# (registration, heartbeats), by applications (a session's placement and grant) and by flytctl
# (administration).
#
# Roles and flow.
# - A node calls registerNode with its GPUs when it starts and whenever a heartbeat answers
#   `reregister` (the orchestrator forgot it, e.g. its database was replaced). The answer carries the
#   orchestrator's Ed25519 public key, with which the node verifies grants.
# - A node calls heartbeat every `heartbeatMs` with the sessions it serves and those that ended since
#   its last successful heartbeat, and at once when a session starts or ends. A node silent for the
#   orchestrator's node timeout is marked down and its sessions are ended. The answer orders the node
#   to kill sessions (flytctl session kill, a removed tenant) and to change live memory quotas.
# - An application (Flyt's libcudart, when FLYT_ORCHESTRATOR is set) calls openSession with its
#   tenant's name and token. The orchestrator places the session on a GPU with enough free SMs and
#   memory and answers a SignedGrant; the application connects to the node and sends the grant as
#   Hello.token (session.capnp). The node admits the session only if the grant verifies, names this
#   node, has not expired, and was not used before; it then enforces the grant's SM share and memory.
# - flytctl calls the administration methods.
#
# Errors are kj exceptions whose description is the human-readable reason ("unknown tenant 'a'",
# "no GPU has 50% of its SMs and 8.0 GiB free: ...").
#
# Times are Unix milliseconds; sizes are bytes; SM shares are percentages of a GPU's SMs (1..100).

@0xf0cc6fcf254c7cba;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("flyt::wire");

const clusterProtocolVersion :UInt32 = 1;

# What the orchestrator granted one session. Serialised (unpacked, single segment) into
# SignedGrant.grant; the signature covers exactly those bytes.
struct Grant {
  sessionId @0 :UInt64;      # the session id the application must say in Hello
  tenant @1 :Text;
  node @2 :Text;             # the node's name: another node refuses the grant
  gpuUuid @3 :Text;          # "GPU-..." as the driver reports it
  smPercent @4 :UInt32;      # 1..100
  memoryBytes @5 :UInt64;    # device memory the session may allocate
  issuedAtMs @6 :Int64;
  expiresAtMs @7 :Int64;     # the session must start (say Hello to the node) before this
  idleTimeoutS @8 :UInt32;   # the node ends the session after this long without a call; 0: never
}

struct SignedGrant {
  grant @0 :Data;            # a serialised Grant
  signature @1 :Data;        # Ed25519 over `grant`, by the orchestrator's key
}

struct Gpu {
  uuid @0 :Text;
  name @1 :Text;
  smCount @2 :UInt32;
  memoryBytes @3 :UInt64;
  mps @4 :Bool;              # an MPS control daemon serves this GPU: SM shares use MPS, else green contexts
}

struct NodeInfo {
  protocolVersion @0 :UInt32;
  name @1 :Text;             # unique in the cluster
  hostId @2 :Text;           # identifies the host (clients on the same host use shared memory)
  shmEndpoint @3 :Text;      # "shm://flyt"
  tcpEndpoint @4 :Text;      # "tcp://10.0.0.5:7070", or empty
  executor @5 :Text;         # "cuda" or "standin" (the GPU stand-in, a test double)
  gpus @6 :List(Gpu);
}

struct NodeReport {
  name @0 :Text;
  live @1 :List(UInt64);     # sessions the node serves now
  ended @2 :List(SessionEnd);
}

struct SessionEnd {
  sessionId @0 :UInt64;
  reason @1 :Text;           # "exited", "client went away", "killed", "idle", "refused: ..."
}

struct QuotaChange {
  sessionId @0 :UInt64;
  memoryBytes @1 :UInt64;
}

struct NodeOrders {
  reregister @0 :Bool;              # the orchestrator does not know this node: call registerNode
  kill @1 :List(UInt64);            # end these sessions now
  memoryQuotas @2 :List(QuotaChange);  # apply these quotas to live sessions
}

struct SessionRequest {
  tenant @0 :Text;
  token @1 :Text;
  clientName @2 :Text;
  hostId @3 :Text;           # the application's host (see NodeInfo.hostId)
  pid @4 :UInt32;
}

struct Placement {
  signedGrant @0 :Data;      # a serialised SignedGrant: send it as Hello.token
  sessionId @1 :UInt64;
  node @2 :Text;
  endpoints @3 :List(Text);  # where to connect, best first (shared memory first for a client on the node's host)
  gpuUuid @4 :Text;
  smPercent @5 :UInt32;
  memoryBytes @6 :UInt64;
}

struct Tenant {
  name @0 :Text;
  smPercent @1 :UInt32;      # each session's SM share
  memoryBytes @2 :UInt64;    # each session's device-memory quota
  maxSessions @3 :UInt32;    # sessions the tenant may hold at once
  sessions @4 :UInt32;       # sessions it holds now (listing only)
}

struct GpuStatus {
  gpu @0 :Gpu;
  smPercentUsed @1 :UInt32;
  memoryUsed @2 :UInt64;     # granted memory plus per-session overhead
  sessions @3 :UInt32;
}

struct NodeStatus {
  info @0 :NodeInfo;
  up @1 :Bool;
  lastSeenMs @2 :Int64;
  gpus @3 :List(GpuStatus);
}

struct SessionStatus {
  sessionId @0 :UInt64;
  tenant @1 :Text;
  node @2 :Text;
  gpuUuid @3 :Text;
  smPercent @4 :UInt32;
  memoryBytes @5 :UInt64;
  state @6 :Text;            # "granted" (the application has not reached the node yet) or "active"
  clientName @7 :Text;
  pid @8 :UInt32;
  createdMs @9 :Int64;
}

struct ClusterStatus {
  version @0 :Text;
  startedMs @1 :Int64;
  database @2 :Text;
  placement @3 :Text;        # "best-fit" or "spread"
  tenants @4 :UInt32;
  nodesUp @5 :UInt32;
  nodesDown @6 :UInt32;
  gpus @7 :UInt32;
  sessions @8 :UInt32;
}

struct TenantChange {
  name @0 :Text;
  smPercent @1 :UInt32;      # 0: unchanged
  memoryBytes @2 :UInt64;    # 0: unchanged
  maxSessions @3 :UInt32;    # 0: unchanged
  token @4 :Text;            # empty: unchanged
}

interface Orchestrator {
  # Applications.
  openSession @0 (request :SessionRequest) -> (placement :Placement);

  # Nodes.
  registerNode @1 (node :NodeInfo) -> (publicKey :Data, heartbeatMs :UInt32);
  heartbeat @2 (report :NodeReport) -> (orders :NodeOrders);

  # Administration (flytctl). addTenant answers the tenant's token: the given one, or a new random
  # one when none was given; the orchestrator keeps only its hash.
  addTenant @3 (tenant :Tenant, token :Text) -> (tenant :Tenant, token :Text);
  listTenants @4 () -> (tenants :List(Tenant));
  setTenant @5 (change :TenantChange) -> (tenant :Tenant);
  removeTenant @6 (name :Text) -> (endedSessions :UInt32);
  listNodes @7 () -> (nodes :List(NodeStatus));
  listSessions @8 () -> (sessions :List(SessionStatus));
  killSession @9 (sessionId :UInt64) -> ();
  status @10 () -> (status :ClusterStatus);
}
