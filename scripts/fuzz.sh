#!/usr/bin/env bash
# Builds Flyt's libFuzzer targets (clang 16, -fsanitize=fuzzer,address) into build-fuzz/ and runs
# each of them in parallel for a while. Not part of CI: CI replays the crashers kept as GoogleTests.
#
# Usage: scripts/fuzz.sh [--seconds N] [--only TARGET] [--build-only]
#   --seconds N       how long each target runs (default 600)
#   --only TARGET     run one target: dispatch, tcp_framing or config
#   --build-only      configure and build, run nothing
#
# Targets (fuzz/<target>_fuzz.cpp):
#   dispatch      a Cap'n Proto Envelope (plus inline payload) handed to the worker's SessionHandler
#                 (GPU stand-in, 64 MiB memory quota) over a loopback channel
#   tcp_framing   a TCP frame (24-byte header + message) through checkHeader, splitSegments,
#                 encodeSegmentTable and checkDecodes (transport/src/tcp_framing.cpp)
#   config        a TOML document read as [transport], [cluster], [node], [orchestrator] and [log]
#
# Each target's corpus grows in build-fuzz/corpus/<target> (seeded from fuzz/seeds/<target>); its
# log is build-fuzz/logs/<target>.log; crashing inputs land in build-fuzz/crashes/<target>/. Keep
# each crasher as a regression test under tests/unit/<layer>/crashers/ (README.md, "Fuzzing").
# Installs clang-16 and libclang-rt-16-dev (Debian 12) when missing; uses sudo when not root.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600
only=""
build_only=0
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    --build-only) build_only=1; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

targets=(dispatch tcp_framing config)
if [[ -n "$only" ]]; then
  [[ " ${targets[*]} " == *" $only "* ]] || { echo "fuzz: no target '$only' (${targets[*]})" >&2; exit 2; }
  targets=("$only")
fi

scripts/setup.sh --quiet
missing=()
for pkg in clang-16 libclang-rt-16-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]} > 0)); then
  echo "fuzz: installing ${missing[*]}"
  sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build=build-fuzz
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f $build/CMakeCache.txt ]]; then
  CC=clang-16 CXX=clang++-16 cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DFLYT_FUZZ=ON -DFLYT_BUILD_TESTS=OFF -DFLYT_BUILD_BENCHMARKS=OFF >/dev/null
fi
cmake --build "$build" -j "$(nproc)" --target "${targets[@]/%/_fuzz}"
((build_only)) && exit 0

mkdir -p "$build/logs"
pids=()
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t" "$build/crashes/$t"
  cp -n fuzz/seeds/"$t"/* "$build/corpus/$t/"
  # -rss_limit_mb: the dispatch target keeps one session (and its stand-in allocations) for the run.
  "$build/bin/${t}_fuzz" "$build/corpus/$t" -max_total_time="$seconds" -print_final_stats=1 \
    -rss_limit_mb=4096 -max_len=65536 -artifact_prefix="$build/crashes/$t/" \
    >"$build/logs/$t.log" 2>&1 &
  pids+=($!)
done
echo "fuzz: running ${targets[*]} for ${seconds}s each (logs in $build/logs/)"
status=0
for i in "${!targets[@]}"; do wait "${pids[$i]}" || status=1; done

printf '%-12s %12s %8s %8s %8s\n' target runs cov ft crashes
for t in "${targets[@]}"; do
  log="$build/logs/$t.log"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: ' | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  crashes=$(find "$build/crashes/$t" -type f | wc -l)
  printf '%-12s %12s %8s %8s %8s\n' "$t" "${runs:-?}" "${cov:-?}" "${ft:-?}" "$crashes"
  ((crashes == 0)) || status=1
done
exit $status
