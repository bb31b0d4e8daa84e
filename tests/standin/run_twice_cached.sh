#!/usr/bin/env bash
# run_twice_cached.sh FLYT PROGRAM [ARGS...]
# Starts one node with a TCP listener and a fresh fatbin cache ($FLYT_CACHE_DIR), runs PROGRAM
# against it twice with `flyt run --server tcp://...` (two sessions, two workers), and checks the
# workers' log: the first run uploads its fatbins (no cache hit), the second finds them in the node's
# cache ("fatbin <hash> from the node's cache") and succeeds as well.
set -euo pipefail
flyt=$1
shift
bin=$(dirname "$flyt")
export FLYT_LOG=info
export FLYT_CACHE_DIR
FLYT_CACHE_DIR=$(mktemp -d)/fatbins
name="flyt-test-$$"
ready=$(mktemp)
nodelog=$(mktemp)
"$bin/flyt-node" --shm "$name" --tcp 127.0.0.1:0 --ready-fd 3 3>"$ready" 2>"$nodelog" &
node=$!
trap 'kill -TERM $node 2>/dev/null; wait $node 2>/dev/null; rm -rf "$ready" "$nodelog" "$(dirname "$FLYT_CACHE_DIR")"' EXIT
for _ in $(seq 100); do
  grep -q tcp:// "$ready" 2>/dev/null && break
  kill -0 $node 2>/dev/null || { echo "run_twice_cached: the node did not start" >&2; cat "$nodelog" >&2; exit 1; }
  sleep 0.1
done
server=$(grep -o 'tcp://[^ ]*' "$ready" | head -1)
[[ -n $server ]] || { echo "run_twice_cached: the node reported no TCP endpoint" >&2; exit 1; }

hits() { grep -c "fatbin [0-9a-f]* from the node's cache" "$nodelog" || true; }
"$flyt" run --server "$server" -- "$@" || { echo "run_twice_cached: the first run failed" >&2; cat "$nodelog" >&2; exit 1; }
first=$(hits)
stored=$(find "$FLYT_CACHE_DIR" -name '*.fatbin' | wc -l)
"$flyt" run --server "$server" -- "$@" || { echo "run_twice_cached: the second run failed" >&2; cat "$nodelog" >&2; exit 1; }
sleep 0.2
second=$(hits)
mode=$(stat -c %a "$FLYT_CACHE_DIR")
if [[ $first -ne 0 || $stored -eq 0 || $second -eq 0 || $mode != 700 ]]; then
  echo "run_twice_cached: expected no cache hit in the first run ($first), images stored ($stored)," \
       "hits in the second ($second), a 0700 directory ($mode)" >&2
  cat "$nodelog" >&2
  exit 1
fi
grep "from the node's cache" "$nodelog"
echo "fatbin cache: second run served from the node's cache ($second hits, $stored images stored)"
