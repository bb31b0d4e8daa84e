# Flyt session protocol, version 1.
#
# One session = one application process talking to one worker. Every message on a Channel is one
# `Envelope`. The client opens with `hello`; the server answers `welcome` (status ok) or refuses
# (status unsupported for a protocol-version mismatch, with a human-readable `message`), then closes.
#
# After the handshake the client sends `batch` messages. A batch carries one or more calls, each with
# a sequence number that increases by one per call over the whole session, so the server can detect a
# lost or reordered call. The server executes calls strictly in batch order. Calls that the client
# does not wait for (asynchronous calls) are appended to a batch; a synchronising call ends the batch,
# and the server answers that batch with one `reply` carrying a `CallResult` for every call that failed
# plus the result of the last call. A reply always carries the backend's CUDA error verbatim
# (`cudaError`, the numeric cudaError_t) and a transport status.
#
# Bulk data does not travel inside the Cap'n Proto message. Either it lies in the session's data region
# (shared memory mapped by both sides) and a `BulkRef` names it by segment id, byte offset and length,
# or, on channels that carry inline payloads (TCP, loopback, and small payloads on shm), the payload
# bytes follow the message in the same frame and a `BulkRef` with segment = inlineSegment addresses
# them by offset within that payload.
#
# The server validates every field before use: unknown method ids, BulkRefs outside a segment, and
# wrong versions are answered with status malformed/unsupported, never acted on.
#
# Data region (shm sessions only; see transport/include/flyt/transport/data_region.hpp). The client
# creates shared-memory segments (segment 0 is the staging ring, later ones hold pinned host memory)
# and announces each with `regionUpdate` before any BulkRef names it. The server maps and registers
# every added segment, in order, and answers with one `regionAck` listing the segments it mapped; on
# the first failure it stops, and status/message say why (the session is then unusable for region
# copies). On the ack the client unlinks the segments' names, so no file outlives both processes.
# `removed` asks the server to unregister and unmap segments the client no longer uses; no ack.
#
# Authentication (TCP only; see transport/src/handshake.cpp). When the server has a shared secret
# (transport.auth_token) and the channel crosses hosts (anything but shm, which is same-host and
# guarded by the files' permissions), it answers Hello with `authChallenge` instead of Welcome:
# a fresh random nonce, and its own proof over the client's nonce (Hello.authNonce). The client
# answers `authResponse` with its proof over the server's nonce; the server checks it in constant
# time and goes on with Welcome, or refuses with a Welcome whose status is unsupported and whose
# message says authentication failed. A welcomed client that has a secret then checks the server's
# proof and leaves (Goodbye) if it is wrong, or if a TCP server sent no challenge at all. Proofs are HMAC-SHA256(secret, nonce || sessionId (8 bytes, little
# endian) || label), label "flyt-tcp-v1 client" or "flyt-tcp-v1 server", so the secret never
# travels and neither side's proof can be replayed for another nonce, session or direction.

@0xdd4240d9edbf56be;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("flyt::wire");

const protocolVersion :UInt32 = 1;

# Segment id meaning "the inline payload that follows this message" rather than a region segment.
const inlineSegment :UInt32 = 0xffffffff;

enum TransportStatus {
  ok @0;            # the call reached the server and `cudaError` is its verbatim result
  disconnected @1;  # the peer went away
  timeout @2;       # the peer stayed silent past the configured bound
  malformed @3;     # the message failed validation (bad size, offset, handle or field)
  unsupported @4;   # the server does not implement the method or protocol version
  busy @5;          # (Welcome) the server is at capacity now; the same Hello may succeed later
}

struct BulkRef {
  segment @0 :UInt32;   # data-region segment id, or inlineSegment
  offset @1 :UInt64;    # bytes from the start of the segment (or of the inline payload)
  length @2 :UInt64;    # bytes
}

# Which CUDA API the client speaks: the worker serves a session with the method table of that API
# (runtime: api/cudart.toml, Flyt's libcudart.so.13; driver: api/cuda.toml, Flyt's libcuda.so.1).
# The method ids of the two are separate spaces; `cudaError` carries a cudaError_t or a CUresult.
enum SessionApi {
  runtime @0;
  driver @1;
}

struct Hello {
  protocolVersion @0 :UInt32;
  sessionId @1 :UInt64;     # chosen by the client, unique per host (random 64 bits)
  clientName @2 :Text;      # program name, for logs and session listings
  pid @3 :UInt32;           # client process id in its own namespace, for logs only
  token @4 :Data;           # authentication material; empty when the server requires none
  authNonce @5 :Data;       # 32 random bytes the server proves its secret over (AuthChallenge)
  api @6 :SessionApi;       # the method table of the session's calls
}

struct Welcome {
  protocolVersion @0 :UInt32;  # the server's version
  sessionId @1 :UInt64;        # echoes Hello.sessionId
  status @2 :TransportStatus;  # ok, or why the session is refused
  message @3 :Text;            # human-readable reason when status != ok
  redirect @4 :Text;           # when set (status ok): the session continues at this endpoint; the
                               # client connects there and repeats Hello with the same session id
                               # (a node hands each session to its own worker process this way)
}

struct Call {
  sequence @0 :UInt64;     # per-session, starts at 1, +1 per call
  method @1 :UInt32;       # method id from the generated API table
  args @2 :AnyPointer;     # method-specific argument struct
  bulk @3 :List(BulkRef);  # bulk data the call reads or writes
}

struct Batch {
  calls @0 :List(Call);
  wantsReply @1 :Bool;     # true when the client waits for a reply to this batch
}

struct CallResult {
  sequence @0 :UInt64;
  cudaError @1 :Int32;           # cudaError_t as the backend returned it, verbatim
  status @2 :TransportStatus;
  detail @3 :Text;               # human-readable context when status != ok
  results @4 :AnyPointer;        # method-specific result struct
}

struct Reply {
  results @0 :List(CallResult);
  output @1 :Data;               # what the worker printed since the last reply (device printf);
                                 # the client writes it to the application's stdout
}

struct Goodbye {
  reason @0 :Text;
}

enum SegmentKind {
  stagingRing @0;   # slots for staged (pageable) copies
  hostMemory @1;    # pinned host allocations (cudaMallocHost / cudaHostAlloc)
}

struct SegmentInfo {
  id @0 :UInt32;          # small integer, unique within the session; what BulkRef.segment names
  kind @1 :SegmentKind;
  name @2 :Text;          # POSIX shm name, "/flyt-region-<pid>-<session hex>-<id>"
  size @3 :UInt64;        # bytes, whole segment (first page is a header; BulkRef offsets start past it)
}

struct RegionUpdate {
  added @0 :List(SegmentInfo);
  removed @1 :List(UInt32);
}

struct RegionAck {
  mapped @0 :List(UInt32);     # segments now mapped and registered by the server
  status @1 :TransportStatus;  # ok, or malformed when an announced segment failed its checks
  message @2 :Text;            # human-readable reason when status != ok
}

struct Envelope {
  union {
    hello @0 :Hello;
    welcome @1 :Welcome;
    batch @2 :Batch;
    reply @3 :Reply;
    goodbye @4 :Goodbye;
    regionUpdate @5 :RegionUpdate;   # client -> server
    regionAck @6 :RegionAck;         # server -> client
    authChallenge @7 :AuthChallenge; # server -> client, after Hello, when the server requires auth
    authResponse @8 :AuthResponse;   # client -> server, the answer to authChallenge
  }
}

struct AuthChallenge {
  nonce @0 :Data;         # 32 fresh random bytes the client must prove the secret over
  serverProof @1 :Data;   # the server's proof over Hello.authNonce (empty if Hello had none)
}

struct AuthResponse {
  proof @0 :Data;         # the client's proof over AuthChallenge.nonce; empty: it has no secret
}
