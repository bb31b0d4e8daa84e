#!/usr/bin/env bash
# Sets everything up, builds Flyt and runs its main job: CUDA programs through `flyt run`.
#   - On a host with a GPU: the twelve GPU acceptance programs (tests/gpu), each natively and
#     through Flyt over shared memory (a private node per program), with a pass/fail table.
#   - On a host without one: a program of memory, copies, streams and events through Flyt on the GPU
#     stand-in (a test double), since kernels need a GPU.
# Then a benchmark (about a minute; skip it with --no-bench): with a GPU, `flytbench memcpy`
# (Flyt against NVIDIA's runtime); without, the transport benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=1
[[ "${1:-}" == "--no-bench" ]] && bench=0

scripts/setup.sh
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)"

if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  echo "quickstart: GPU found: the acceptance programs natively and through flyt run (shm)" >&2
  tests/gpu/run_matrix.sh --build-dir build --mode native
  tests/gpu/run_matrix.sh --build-dir build --mode shm
else
  echo "quickstart: no GPU here: running build/bin/standin/memory_path through flyt run (GPU stand-in)" >&2
  build/bin/flyt run --executor standin -- build/bin/standin/memory_path
fi

if [[ $bench == 1 ]]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    echo "quickstart: flytbench memcpy: Flyt against NVIDIA's runtime (about a minute)" >&2
    build/bin/flytbench memcpy
  else
    echo "quickstart: transport benchmark (build/bin/flyt_transport_bench; flytbench needs a GPU)" >&2
    build/bin/flyt_transport_bench --benchmark_min_time=0.2
  fi
fi
