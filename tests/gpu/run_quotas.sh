#!/usr/bin/env bash
# run_quotas.sh — the GPU checks of the cluster quotas, by hand on a GPU host (not CI): starts a
# flyt-orchestrator and a flyt-node, adds tenants with 100 %, 50 % and 25 % SM shares and a 1 GiB
# memory quota, and runs tests/gpu/sm_share (a compute-bound kernel) and tests/gpu/memory_quota as
# those tenants, with green contexts (--mps off) and with MPS (--mps manage: the node starts and
# stops the MPS control daemon), alone and two tenants at once.
#
#   tests/gpu/run_quotas.sh [BIN_DIR [GPU_PROGRAM_DIR]]   (defaults: build/bin, build/bin/gpu)
#
# Expect kernel_ms about 4x the 100 % figure at 25 %, 2x at 50 %; memory_quota "all checks passed".
set -u
bin=${1:-build/bin}
gpu=${2:-$bin/gpu}
orch=127.0.0.1:${FLYT_TEST_ORCHESTRATOR_PORT:-7000}
state=$(mktemp -d)
trap 'kill -TERM ${node:-} ${orchestrator:-} 2>/dev/null; wait 2>/dev/null; rm -rf "$state"' EXIT
"$bin/flyt-orchestrator" --listen "$orch" --database "$state/o.db" 2>"$state/orchestrator.log" &
orchestrator=$!
sleep 1
ctl() { "$bin/flytctl" --orchestrator "$orch" "$@"; }
ctl tenant add full --sm 100 --memory 16GiB --token token-full >/dev/null
ctl tenant add half --sm 50 --memory 8GiB --token token-half >/dev/null
ctl tenant add quarter --sm 25 --memory 16GiB --token token-quarter >/dev/null
ctl tenant add q1g --sm 25 --memory 1GiB --token token-q1g >/dev/null
as() { local tenant=$1; shift; "$bin/flyt" run --orchestrator "$orch" --tenant "$tenant" --token "token-$tenant" -- "$@"; }
echo "native: $(env -u LD_LIBRARY_PATH "$gpu/sm_share")"
for mps in off manage; do
  "$bin/flyt-node" --orchestrator "$orch" --name gpu --shm flyt-quotas --tcp none --mps $mps 2>"$state/node.log" &
  node=$!
  for _ in $(seq 100); do grep -q "registered with the orchestrator" "$state/node.log" && break; sleep 0.1; done
  echo "== mps $mps"
  for tenant in full half quarter; do echo "$tenant: $(as $tenant "$gpu/sm_share")"; done
  as half "$gpu/sm_share" > "$state/half.out" & both=$!
  echo "quarter, beside half: $(as quarter "$gpu/sm_share")"
  wait $both; echo "half, beside quarter: $(cat "$state/half.out")"
  FLYT_TEST_QUOTA_BYTES=1073741824 as q1g "$gpu/memory_quota"
  kill -TERM $node; wait $node; node=
done
