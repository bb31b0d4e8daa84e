#!/usr/bin/env bash
# run_on_gpu.sh PREFIX OUT_DIR — the driver-API cut on a GPU host, with the programs built into
# PREFIX (bin/, lib/, lib/driver/ as `flyt` expects; bin/driver and bin/gpu hold the test programs):
#   1. NVIDIA's driver exports against api/libcuda-exports.txt (OUT_DIR/exports.diff);
#   2. driver_paths and runtime_on_driver (static and shared runtime) through `flyt run --api driver`;
#   3. every GPU acceptance program (bin/gpu) through `flyt run --api driver`;
#   4. nvml_check (Flyt's libnvidia-ml.so.1, and the process's maps), and the library programs
#      of bin/gpu-libraries (cuBLAS, cuFFT, cuRAND, cuSOLVER, cuSPARSE, Thrust/CUB, graphs,
#      textures, memory pools, managed memory, NVRTC, separable compilation) natively and through Flyt;
#   5. tests/driver/torch_check.py natively (results saved) and through Flyt over shared memory and
#      over TCP with the GPU hidden from the application (its /dev/nvidia* hidden, as in a VM),
#      each compared with the native results; the timing lines of each.
# Prints a result line per run and "run_on_gpu: N passed, M failed". Logs go to OUT_DIR.
set -u
prefix=$1 out=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
flyt=$prefix/bin/flyt
pass=0 fail=0
export FLYT_LOG=${FLYT_LOG:-info}
export FLYT_CALL_COUNTS=${FLYT_CALL_COUNTS:-1}  # each Flyt run ends with a line of its waited-for calls

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

# A developer's probe (tools/crash_trace.c): where a failed program crashed, in its debug rerun.
crash_trace=
gcc -shared -fPIC -O1 -o "$out/crash_trace.so" "$here/tools/crash_trace.c" -ldl 2>/dev/null && crash_trace=$out/crash_trace.so

run() {  # name expected-line command...
  local name=$1 expect=$2
  shift 2
  local log=$out/$name.log
  timeout 300 "$flyt" run --api driver -- "$@" >"$log" 2>&1
  local status=$?
  record "$name" $status "$log" "$expect"
  if [[ $status -ne 0 ]] || { [[ -n $expect ]] && ! grep -q "$expect" "$log"; }; then  # again, with Flyt's debug log
    FLYT_LOG=debug LD_PRELOAD=$crash_trace timeout 120 "$flyt" run --api driver -- "$@" >"$out/$name.debug.log" 2>&1
  fi
}

run driver_paths "driver_paths: all checks passed" "$prefix/bin/driver/driver_paths" "$prefix/bin/driver/driver_kernels.fatbin"
run runtime_static "runtime_on_driver: all checks passed" "$prefix/bin/driver/runtime_on_driver_static"
# NVIDIA's shared runtime: the host's, else one carried in PREFIX/nvidia.
run runtime_shared "runtime_on_driver: all checks passed" env "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}:$prefix/nvidia" \
  "$prefix/bin/driver/runtime_on_driver_shared"
run nvml_check "nvml_check: all checks passed" "$prefix/bin/driver/nvml_check"

# Library programs (bin/gpu-libraries: NVIDIA's runtime static, cuBLAS & co. shared), natively and
# through Flyt, with NVIDIA's libraries from wherever this host has them (toolkit or pip wheels).
libdirs=
for lib in libcublas.so.13 libcublasLt.so.13 libcufft.so.12 libcurand.so.10 libcusolver.so.12 libcusparse.so.12 \
  libnvrtc.so.13 libnvJitLink.so.13; do
  found=$(find /usr/local/cuda* /usr/lib/x86_64-linux-gnu "$(python3 -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)" \
    -name "$lib" 2>/dev/null | head -1)
  [[ -n $found ]] && libdirs=$libdirs:$(dirname "$found")
done
echo "NVIDIA's libraries from: ${libdirs#:}"
for program in "$prefix"/bin/gpu-libraries/*; do
  name=lib_$(basename "$program")
  env LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}$libdirs" timeout 120 "$program" >"$out/$name.native.log" 2>&1
  echo "native $name: rc=$?"
  run "$name" "PASS" env LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}$libdirs" "$program"
done
for program in "$prefix"/bin/gpu/*; do
  case $(basename "$program") in
    memory_quota) continue ;;  # needs a node with a quota (tests/gpu/run_quotas.sh)
  esac
  run "gpu_$(basename "$program")" "" "$program"
done

# A node with a TCP listener on loopback, for the runs "as in a VM"; extra arguments are node
# options (a quota, an SM share). Sets node, server (its tcp endpoint) and shm_server.
tcp_node() {
  local ready=$out/node.ready
  rm -f "$ready"
  "$prefix/bin/flyt-node" --shm "flyt-gpu-$$" --tcp 127.0.0.1:0 --ready-fd 3 "$@" 3>"$ready" >>"$out/tcp_node.log" 2>&1 &
  node=$!
  for _ in $(seq 100); do grep -q tcp:// "$ready" 2>/dev/null && break; sleep 0.1; done
  server=$(grep -o 'tcp://[^ ]*' "$ready" | head -1)
  shm_server=$(grep -o 'shm://[^ ]*' "$ready" | head -1)
}

# The session's limits under the driver cut: an SM share of 25 % (a green context in place of the
# primary context) and a memory quota, with the kernel time next to the native one.
if [[ -x $prefix/bin/gpu/sm_share ]]; then
  echo "sm_share native: $("$prefix/bin/gpu/sm_share" 2>&1 | tail -1)"
  tcp_node --session-sm-percent 25 --session-memory-limit 1GiB
  if [[ -n $shm_server ]]; then
    log=$out/gpu_sm_share_25.log
    timeout 120 "$flyt" run --api driver --server "$shm_server" -- "$prefix/bin/gpu/sm_share" >"$log" 2>&1
    record gpu_sm_share_25 $? "$log" "sm_share: multiProcessorCount=32 "
    echo "sm_share 25 %: $(grep 'sm_share:' "$log" | tail -1)"
    log=$out/gpu_memory_quota.log
    FLYT_TEST_QUOTA_BYTES=$((1 << 30)) FLYT_TEST_EXPECT_SMS=32 timeout 120 "$flyt" run --api driver --server "$shm_server" -- \
      "$prefix/bin/gpu/memory_quota" >"$log" 2>&1
    record gpu_memory_quota $? "$log"
    kill -TERM "$node"; wait "$node" 2>/dev/null
  else
    echo "FAIL  gpu_sm_share_25 (the limited node did not start)"; fail=$((fail + 1))
  fi
fi

if python3 -c 'import torch' 2>/dev/null; then
  # Which private export-table entries NVIDIA's runtime and cuBLAS use natively (a probe: tools/).
  if env=$("$here/tools/make_trace_driver.sh" "$out/trace" 2>"$out/trace_build.log"); then
    env $env python3 -c 'import torch; a = torch.randn(64, 64, device="cuda"); print((a @ a).sum().item())' \
      >"$out/trace_native.log" 2>&1
    echo "export-table trace: $(grep -c 'slot' "$out/trace_native.log") entry calls (trace_native.log)"
  fi
  skip=${TORCH_SKIP:-}
  timeout 500 python3 "$here/torch_check.py" --skip "$skip" --save "$out/torch_native.pt" >"$out/torch_native.log" 2>&1
  echo "native run: rc=$?"
  grep -E 'torch_check: (train|resnet50)' "$out/torch_native.log" | sed 's/^/native: /'
  run torch_shm "torch_check: all checks passed" python3 "$here/torch_check.py" --skip "$skip" --compare "$out/torch_native.pt"
  grep -E 'torch_check: (train|resnet50|stage .*FAILED)' "$out/torch_shm.log" | sed 's/^/flyt shm: /'
  tcp_node
  if [[ -n $server ]]; then
    log=$out/torch_tcp.log
    # The GPU hidden from the application as in a VM: its device nodes are /dev/null in a mount
    # namespace of its own (CUDA_VISIBLE_DEVICES cannot do it: PyTorch reads that variable itself
    # and then counts no device, whoever serves the driver API).
    hide=()
    if unshare --mount true 2>/dev/null; then
      hide=(unshare --mount sh -c 'for d in /dev/nvidia*; do mount --bind /dev/null "$d"; done; exec "$@"' hide)
      echo "tcp: the application runs with /dev/nvidia* hidden"
    else
      echo "tcp: cannot hide /dev/nvidia* (no mount namespace); the application could see the GPU"
    fi
    timeout 500 "${hide[@]}" "$flyt" run --api driver --server "$server" -- \
      python3 "$here/torch_check.py" --skip "$skip" --compare "$out/torch_native.pt" >"$log" 2>&1
    record torch_tcp $? "$log" "torch_check: all checks passed"
    grep -E 'torch_check: (train|resnet50|stage .*FAILED)' "$log" | sed 's/^/flyt tcp: /'
    kill -TERM "$node"; wait "$node" 2>/dev/null
  else
    echo "FAIL  torch_tcp (the TCP node did not start)"; fail=$((fail + 1))
  fi
  if ! grep -q "all checks passed" "$out/torch_shm.log"; then  # again, with cuBLAS's own log
    CUBLAS_LOGINFO_DBG=1 CUBLAS_LOGDEST_DBG=stderr CUBLASLT_LOG_LEVEL=5 FLYT_LOG=debug \
      LD_PRELOAD=$crash_trace timeout 300 "$flyt" run --api driver -- python3 "$here/torch_check.py" --skip resnet50,compile >"$out/torch_debug.log" 2>&1
  fi
fi
echo "run_on_gpu: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
