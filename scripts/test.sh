#!/usr/bin/env bash
# Sets everything up, builds Flyt and runs the whole test suite. This is what CI runs (.ci/run).
# GPU tests (CTest label `gpu`) report themselves as skipped where no GPU exists.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
jobs=$(nproc)
cmake --preset default >/dev/null
cmake --build --preset default -j "$jobs"
ctest --preset default -j "$jobs"
