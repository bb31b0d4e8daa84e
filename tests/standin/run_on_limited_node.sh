#!/usr/bin/env bash
# run_on_limited_node.sh FLYT shm|tcp "NODE OPTIONS" PROGRAM [ARGS...]
# Starts a flyt-node (next to FLYT) with NODE OPTIONS (standalone mode limits such as
# --session-memory-limit) on a private shm name and a free loopback TCP port, runs PROGRAM against
# its shm or tcp endpoint with `flyt run --server`, and stops the node. The executor is auto: the
# GPU, else the stand-in. Exits with PROGRAM's status, and fails if PROGRAM did not open a Flyt
# session over that transport (NVIDIA's own libcudart.so.13 may be on the default library path).
# FLYT_RUN_API=driver runs PROGRAM with `flyt run --api driver`; FLYT_RUN_EXPECT: a line PROGRAM
# must print (stdout or stderr).
set -euo pipefail
flyt=$1 transport=$2 nodeOptions=$3
shift 3
bin=$(dirname "$flyt")
log=$(mktemp) ready=$(mktemp)
export FLYT_LOG=info
api=${FLYT_RUN_API:-runtime}
name="flyt-lim-$$"
# shellcheck disable=SC2086  # NODE OPTIONS are words
"$bin/flyt-node" --shm "$name" --tcp 127.0.0.1:0 --ready-fd 3 $nodeOptions 3>"$ready" &
node=$!
trap 'kill -TERM $node 2>/dev/null; wait $node 2>/dev/null; rm -f "$ready" "$log"' EXIT
for _ in $(seq 100); do
  grep -q tcp:// "$ready" 2>/dev/null && break
  kill -0 $node 2>/dev/null || { echo "run_on_limited_node: the node did not start" >&2; exit 1; }
  sleep 0.1
done
server=$(grep -o "$transport://[^ ]*" "$ready" | head -1)
[[ -n $server ]] || { echo "run_on_limited_node: the node reported no $transport endpoint" >&2; exit 1; }
status=0
"$flyt" run --api "$api" --server "$server" -- "$@" > >(tee -a "$log") 2> >(tee -a "$log" >&2) || status=$?
sleep 0.2  # let tee finish
if ! grep -q "\[flyt.interpose\] \[info\] session [0-9a-f]* on $transport://.* ($api API)" "$log"; then
  echo "run_on_limited_node: no Flyt $transport session of the $api API was opened by the program" >&2
  exit 1
fi
if [[ -n ${FLYT_RUN_EXPECT:-} ]] && ! grep -qF -- "$FLYT_RUN_EXPECT" "$log"; then
  echo "run_on_limited_node: the program did not print \"$FLYT_RUN_EXPECT\" (exit status $status)" >&2
  exit 1
fi
exit "$status"
