#!/usr/bin/env bash
# run_load.sh FLYT LOAD_CLIENT
# The load test: one flyt-node (next to FLYT; executor auto: the GPU, else the stand-in) on a private
# shm name and a free loopback port, and rounds of K concurrent `flyt run --server ...` clients per
# transport, each making M mixed calls (load_client.cu). Passes ("run_load: passed") when every
# client opened a Flyt session over its transport, reported "M' calls, 0 errors" and exited 0, and
# the node's resident memory (VmRSS) grew by less than the bound between the end of the warm-up
# round and the end of the last round. Prints the RSS samples.
#
# Environment (defaults: the issue's full size, which takes about 20 s on CI's 2-core machine):
#   FLYT_LOAD_CLIENTS=64     K, concurrent clients per transport and round
#   FLYT_LOAD_CALLS=1000     M, calls per client
#   FLYT_LOAD_ROUNDS=2       measured rounds after the warm-up round
#   FLYT_LOAD_TRANSPORTS="shm tcp"
#   FLYT_LOAD_RSS_GROWTH_KIB=20480   allowed VmRSS growth after the warm-up
#   FLYT_LOAD_NODE_WRAPPER   a command the node runs under, e.g.
#     "valgrind --error-exitcode=99 --leak-check=full --log-file=/tmp/node-vg.%p"
#     (the node's exit status must then be 0 after SIGTERM, so valgrind found no error)
#   FLYT_LOAD_WORKER_WRAPPER   the same for every worker (through a `--worker` script), e.g.
#     "valgrind --error-exitcode=99 --leak-check=full --log-file=/tmp/worker-vg.%p"
#     (a worker's exit status other than 0 is logged by the node and fails the run)
set -euo pipefail
flyt=$1 client=$2
bin=$(dirname "$flyt")
clients=${FLYT_LOAD_CLIENTS:-64} calls=${FLYT_LOAD_CALLS:-1000} rounds=${FLYT_LOAD_ROUNDS:-2}
transports=${FLYT_LOAD_TRANSPORTS:-shm tcp} growthKib=${FLYT_LOAD_RSS_GROWTH_KIB:-20480}
work=$(mktemp -d)
export FLYT_LOG=info
name="flyt-load-$$"
workerArgs=()
if [[ -n ${FLYT_LOAD_WORKER_WRAPPER:-} ]]; then
  printf '#!/bin/sh\nexec %s %q "$@"\n' "$FLYT_LOAD_WORKER_WRAPPER" "$bin/flyt-worker" >"$work/worker"
  chmod +x "$work/worker"
  workerArgs=(--worker "$work/worker")
fi
# shellcheck disable=SC2086  # the wrapper is words
${FLYT_LOAD_NODE_WRAPPER:-} "$bin/flyt-node" --shm "$name" --tcp 127.0.0.1:0 --ready-fd 3 "${workerArgs[@]}" \
  3>"$work/ready" 2>"$work/node.log" &
node=$!
stopNode() {
  kill -TERM $node 2>/dev/null || return 0
  local status=0
  wait $node || status=$?
  echo "run_load: the node exited with status $status"
  return $status
}
trap 'kill -KILL $node 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 600); do
  grep -q tcp:// "$work/ready" 2>/dev/null && break
  kill -0 $node 2>/dev/null || { echo "run_load: the node did not start" >&2; cat "$work/node.log" >&2; exit 1; }
  sleep 0.1
done
rss() { awk '/^VmRSS/ { print $2 }' /proc/$node/status; }

# One round: K clients per transport at once; fails unless every one of them passed.
runRound() {
  local round=$1 pids=() failed=0
  for transport in $transports; do
    local server
    server=$(grep -o "$transport://[^ ]*" "$work/ready" | head -1)
    for k in $(seq "$clients"); do
      "$flyt" run --server "$server" -- "$client" "$calls" >"$work/$round-$transport-$k.out" \
        2>"$work/$round-$transport-$k.err" &
      pids+=($!)
    done
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
  for transport in $transports; do
    for k in $(seq "$clients"); do
      local out=$work/$round-$transport-$k.out err=$work/$round-$transport-$k.err
      if ! grep -Eq "^load_client: [0-9]+ calls, 0 errors$" "$out" ||
         ! grep -q "\[flyt.interpose\] \[info\] session [0-9a-f]* on $transport://" "$err"; then
        echo "run_load: round $round, $transport client $k failed:" >&2
        cat "$out" "$err" >&2
        failed=$((failed + 1))
      fi
    done
  done
  echo "run_load: round $round: $((clients * $(wc -w <<<"$transports"))) clients x $calls calls, $failed failed"
  [[ $failed -eq 0 ]]
}

start=$(rss)
echo "run_load: node VmRSS at start: $start KiB"
runRound warmup
warm=$(rss)
echo "run_load: node VmRSS after the warm-up round: $warm KiB"
for r in $(seq "$rounds"); do
  runRound "$r"
  echo "run_load: node VmRSS after round $r: $(rss) KiB"
done
end=$(rss)
growth=$((end - warm))
echo "run_load: node VmRSS growth after the warm-up: $growth KiB (bound $growthKib KiB)"
expected=$(((rounds + 1) * clients * $(wc -w <<<"$transports")))
for _ in $(seq 50); do  # the node reaps the last workers just after their clients exit
  sessions=$(grep -c "session [0-9a-f]* ended" "$work/node.log" || true)
  [[ $sessions -eq $expected ]] && break
  sleep 0.1
done
echo "run_load: the node logged $sessions of $expected sessions ended"
[[ $sessions -eq $expected ]] || { echo "run_load: sessions missing on the node" >&2; exit 1; }
if grep -E "worker pid [0-9]+ (exited with status [1-9]|was killed)" "$work/node.log" >&2; then
  echo "run_load: workers did not exit cleanly" >&2
  exit 1
fi
stopNode || { cat "$work/node.log" >&2; exit 1; }
[[ $growth -lt $growthKib ]] || { echo "run_load: the node's memory grew by $growth KiB" >&2; exit 1; }
echo "run_load: passed"
