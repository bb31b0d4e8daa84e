#!/usr/bin/env bash
# run_through_flyt.sh FLYT shm|tcp PROGRAM [ARGS...]
# shm: `flyt run -- PROGRAM` (a private node on shared memory);
# tcp: starts a node with a TCP listener on a free loopback port, runs PROGRAM against it with
#      `flyt run --server tcp://...`, and stops the node.
# Exits with PROGRAM's status, and fails if PROGRAM did not open a Flyt session (NVIDIA's own
# libcudart.so.13 is on the default library path in CI: passing is not proof of going through Flyt).
# FLYT_RUN_API=driver runs PROGRAM with `flyt run --api driver` (Flyt's libcuda.so.1 under NVIDIA's
# runtime) and requires a driver-API session. FLYT_RUN_EXPECT: a line PROGRAM must print (stdout or
# stderr); without it the run fails even when PROGRAM exits 0.
set -euo pipefail
flyt=$1 transport=$2
shift 2
bin=$(dirname "$flyt")
log=$(mktemp)
export FLYT_LOG=info
api=${FLYT_RUN_API:-runtime}

proved() {
  local status=$1
  if [[ -n ${FLYT_RUN_EXPECT:-} ]] && ! grep -qF -- "$FLYT_RUN_EXPECT" "$log"; then
    echo "run_through_flyt: the program did not print \"$FLYT_RUN_EXPECT\" (exit status $status)" >&2
    exit 1
  fi
  if ! grep -q "\[flyt.interpose\] \[info\] session [0-9a-f]* on $transport://.* ($api API)" "$log"; then
    echo "run_through_flyt: no Flyt $transport session of the $api API was opened by the program" >&2
    cat "$log" >&2
    exit 1
  fi
  exit "$status"
}

if [[ $transport == shm ]]; then
  status=0
  executor=()
  # Without a GPU, the private node must be told to use the stand-in (flyt refuses otherwise).
  if ! { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }; then executor=(--executor standin); fi
  "$flyt" run --api "$api" "${executor[@]}" -- "$@" > >(tee -a "$log") 2> >(tee -a "$log" >&2) || status=$?
  sleep 0.2  # let tee finish
  proved $status
fi

name="flyt-test-$$"
ready=$(mktemp)
"$bin/flyt-node" --shm "$name" --tcp 127.0.0.1:0 --ready-fd 3 3>"$ready" &  # auto: the GPU, else the stand-in
node=$!
trap 'kill -TERM $node 2>/dev/null; wait $node 2>/dev/null; rm -f "$ready" "$log"' EXIT
for _ in $(seq 100); do
  grep -q tcp:// "$ready" 2>/dev/null && break
  kill -0 $node 2>/dev/null || { echo "run_through_flyt: the node did not start" >&2; exit 1; }
  sleep 0.1
done
server=$(grep -o 'tcp://[^ ]*' "$ready" | head -1)
[[ -n $server ]] || { echo "run_through_flyt: the node reported no TCP endpoint" >&2; exit 1; }
status=0
"$flyt" run --api "$api" --server "$server" -- "$@" > >(tee -a "$log") 2> >(tee -a "$log" >&2) || status=$?
sleep 0.2
proved $status
