#!/usr/bin/env bash
# run_faults.sh BIN FAULT_COPIES
# The fault outcomes of SECURITY.md on a real GPU: GPU memory is given back within 5 s.
# BIN holds flyt-node and flyt-worker, BIN/../lib Flyt's libcudart.so.13; FAULT_COPIES is tests/standin/fault_copies (copies of
# FLYT_FAULT_MIB MiB, default 1024, to and from the GPU in a loop). One flyt-node on a private shm
# name and a free loopback port. For each transport (shm, tcp) and each fault:
#   app      the application SIGKILLed mid-copy
#   worker   its worker SIGKILLed mid-copy: the application must print cudaErrorDevicesUnavailable,
#            "fault_copies: done" and exit 0 within 5 s
# and then both transports at once with the node SIGKILLed (its workers end through their pidfd
# watch). Each time, GPU 0's used memory (nvidia-smi) must come back to within 64 MiB of what it was
# before the application started, within 5 s of the kill. Prints one line per case and
# "run_faults: passed" when all passed; exit status 1 otherwise.
set -uo pipefail
bin=$1 program=$2
mib=${FLYT_FAULT_MIB:-1024}
work=$(mktemp -d)
failed=0
declare -A apps  # case name -> application pid
export FLYT_LOG=info
trap 'kill -KILL $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 | tr -d ' '; }
now() { date +%s.%N; }
elapsed() { awk -v a="$(now)" -v b="$1" 'BEGIN { print a - b }'; }

startNode() {
  rm -f "$work/ready"
  "$bin/flyt-node" --shm "flyt-faults-$$-$1" --tcp 127.0.0.1:0 --ready-fd 3 3>"$work/ready" 2>"$work/node-$1.log" &
  node=$!
  for _ in $(seq 300); do
    grep -q tcp:// "$work/ready" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "run_faults: the node did not start"; cat "$work/node-$1.log"; exit 1
}
endpoint() { grep -o "$1://[^ ]*" "$work/ready" | head -1; }

# startApp NAME SERVER: runs fault_copies on Flyt's runtime ($bin/../lib; not through `flyt run`,
# whose child the application would be), waits for its first successful copy.
startApp() {
  env LD_LIBRARY_PATH="$bin/../lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" FLYT_SERVER="$2" \
    "$program" "$mib" >"$work/$1.out" 2>"$work/$1.err" &
  apps[$1]=$!
  for _ in $(seq 600); do
    grep -q "copy 1 cudaSuccess" "$work/$1.out" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "run_faults: $1 never copied"; cat "$work/$1.out" "$work/$1.err"; return 1
}

# workerOf NODE_LOG APP_PID: the worker pid the node logged for that client.
workerOf() { grep -o "client 'fault_copies' pid $2 via [^,]*, worker pid [0-9]*" "$1" | grep -o "[0-9]*$" | tail -1; }

# memoryBack CASE BASELINE T0: waits until the GPU's used memory is within 64 MiB of BASELINE.
memoryBack() {
  local during=$(used)
  for _ in $(seq 100); do
    local now_used=$(used)
    if (( now_used <= $2 + 64 )); then
      printf 'run_faults: %-22s GPU memory %6s MiB -> %6s MiB (baseline %s) in %.2f s\n' "$1" "$during" "$now_used" "$2" "$(elapsed "$3")"
      return 0
    fi
    sleep 0.05
  done
  echo "run_faults: $1: GPU memory still $(used) MiB 5 s after the kill (baseline $2)"
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv
  failed=$((failed + 1))
}

# appEnded NAME: the application saw the fault and exited 0 within 5 s.
appEnded() {
  local pid=${apps[$1]} status=0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "run_faults: $1: the application did not exit within 5 s"; kill -KILL "$pid"; failed=$((failed + 1)); return
  fi
  wait "$pid" || status=$?
  if [[ $status -ne 0 ]] || ! grep -q "cudaErrorDevicesUnavailable" "$work/$1.out" || ! grep -q "fault_copies: done" "$work/$1.out"; then
    echo "run_faults: $1: exit status $status, output:"; tail -n 5 "$work/$1.out" "$work/$1.err"; failed=$((failed + 1))
  fi
}

startNode 1
for transport in shm tcp; do
  server=$(endpoint $transport)
  for fault in app worker; do
    name=$transport-$fault
    baseline=$(used)
    startApp "$name" "$server" || { failed=$((failed + 1)); continue; }
    appPid=${apps[$name]}
    sleep 0.3
    if [[ $fault == app ]]; then
      t0=$(now); kill -KILL "$appPid"
      memoryBack "$name" "$baseline" "$t0"
      wait "$appPid" 2>/dev/null
    else
      worker=$(workerOf "$work/node-1.log" "$appPid")
      [[ -n $worker ]] || { echo "run_faults: $name: no worker pid in the node's log"; failed=$((failed + 1)); continue; }
      t0=$(now); kill -KILL "$worker"
      memoryBack "$name" "$baseline" "$t0"
      appEnded "$name"
    fi
  done
done
kill -TERM $node; wait $node

startNode 2
baseline=$(used)
startApp node-shm "$(endpoint shm)" && startApp node-tcp "$(endpoint tcp)" || failed=$((failed + 1))
sleep 0.3
t0=$(now); kill -KILL $node
memoryBack "node-killed" "$baseline" "$t0"
appEnded node-shm
appEnded node-tcp

if [[ $failed -eq 0 ]]; then echo "run_faults: passed"; else echo "run_faults: $failed failed"; exit 1; fi
