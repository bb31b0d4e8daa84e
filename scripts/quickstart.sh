#!/usr/bin/env bash
# Sets everything up, builds Flyt and runs its main job. Until the CUDA runtime replacement lands,
# the main job is the transport benchmark: shared memory, TCP and in-process channels and the data
# region against raw memcpy and raw sockets, measured in one run, with a ratio table at the end.
# Extra arguments go to the benchmark (e.g. --benchmark_filter=RoundTrip).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)" --target flyt_transport_bench
echo "quickstart: running build/bin/flyt_transport_bench (about a minute)" >&2
exec build/bin/flyt_transport_bench --benchmark_min_time=0.2 "$@"
