#!/usr/bin/env bash
# run_on_gpu.sh PREFIX OUT_DIR — the driver-API cut on a GPU host, with the programs built into
# PREFIX (bin/, lib/, lib/driver/ as `flyt` expects; bin/driver and bin/gpu hold the test programs):
#   1. NVIDIA's driver exports against api/libcuda-exports.txt (OUT_DIR/exports.diff);
#   2. driver_paths and runtime_on_driver (static and shared runtime) through `flyt run --api driver`;
#   3. every GPU acceptance program (bin/gpu) through `flyt run --api driver`;
#   4. tests/driver/torch_check.py natively and through Flyt (PyTorch, cuBLAS, cuDNN; train-step time).
# Prints a result line per run and "run_on_gpu: N passed, M failed". Logs go to OUT_DIR.
set -u
prefix=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
flyt=$prefix/bin/flyt
pass=0 fail=0
export FLYT_LOG=${FLYT_LOG:-info}

record() {  # name status logfile [expected-line]
  local name=$1 status=$2 log=$3 expect=${4:-}
  local ok=1
  [[ $status -eq 0 ]] || ok=0
  [[ -z $expect ]] || grep -q "$expect" "$log" || ok=0
  if [[ $ok -eq 1 ]] && ! grep -q "(driver API)" "$log"; then ok=0; echo "  $name: no driver-API session was opened" >&2; fi
  if [[ $ok -eq 1 ]]; then pass=$((pass + 1)); echo "pass  $name"; else fail=$((fail + 1)); echo "FAIL  $name (rc=$status, log $log)"; fi
}

real=$(ldconfig -p | awk '/libcuda\.so\.1 /{print $NF; exit}')
if [[ -n $real ]]; then
  nm -D --defined-only "$real" | awk '{print $NF}' | sed 's/@.*//' | sort -u >"$out/real-exports.txt"
  grep -v '^#' "$here/../../api/libcuda-exports.txt" | sort -u >"$out/flyt-exports.txt"
  diff "$out/flyt-exports.txt" "$out/real-exports.txt" >"$out/exports.diff"
  echo "exports: $(wc -l <"$out/real-exports.txt") in $real, $(grep -c '^>' "$out/exports.diff") only there, $(grep -c '^<' "$out/exports.diff") only in Flyt's list"
fi

run() {  # name expected-line command...
  local name=$1 expect=$2
  shift 2
  local log=$out/$name.log
  timeout 300 "$flyt" run --api driver -- "$@" >"$log" 2>&1
  record "$name" $? "$log" "$expect"
}

run driver_paths "driver_paths: all checks passed" "$prefix/bin/driver/driver_paths" "$prefix/bin/driver/driver_kernels.fatbin"
run runtime_static "runtime_on_driver: all checks passed" "$prefix/bin/driver/runtime_on_driver_static"
# NVIDIA's shared runtime: the host's, else one carried in PREFIX/nvidia.
run runtime_shared "runtime_on_driver: all checks passed" env "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}:$prefix/nvidia" \
  "$prefix/bin/driver/runtime_on_driver_shared"
for program in "$prefix"/bin/gpu/*; do
  run "gpu_$(basename "$program")" "" "$program"
done
if python3 -c 'import torch' 2>/dev/null; then
  python3 "$here/torch_check.py" >"$out/torch_native.log" 2>&1
  echo "native: $(grep 'train step' "$out/torch_native.log")"
  run torch_check "torch_check: all checks passed" python3 "$here/torch_check.py"
  grep 'train step' "$out/torch_check.log" | sed 's/^/flyt:   /'
  if ! grep -q "all checks passed" "$out/torch_check.log"; then  # again, with cuBLAS's own log
    CUBLAS_LOGINFO_DBG=1 CUBLAS_LOGDEST_DBG=stderr CUBLASLT_LOG_LEVEL=5 FLYT_LOG=debug \
      timeout 300 "$flyt" run --api driver -- python3 "$here/torch_check.py" >"$out/torch_debug.log" 2>&1
  fi
fi
echo "run_on_gpu: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
