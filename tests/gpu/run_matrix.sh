#!/usr/bin/env bash
# run_matrix.sh — runs every GPU acceptance program natively, through Flyt over shared memory and
# through Flyt over TCP, and prints a pass/fail table (program x mode) and a final
# "N passed, N failed" line. Exits 0 when nothing failed, 1 otherwise, 2 on a usage error.
#
#   tests/gpu/run_matrix.sh [--build-dir DIR] [--mode native|shm|tcp|all] [--out FILE]
#                           [--log-dir DIR]
#
#   --build-dir DIR   the CMake build folder; the programs are DIR/bin/gpu/<name> (default: build)
#   --mode MODE       native, shm, tcp or all (default: all)
#   --out FILE        also write the table to FILE
#   --log-dir DIR     each run's stdout and stderr go to DIR/<program>.<mode>.{stdout,stderr}
#                     (default: DIR/gpu-logs under the build folder)
#
# Modes:
#   native  PROGRAM, with whatever libcudart.so.13 the loader finds (NVIDIA's)
#   shm     $FLYT_BIN run [--server $FLYT_SHM_SERVER] -- PROGRAM   (--server only when set)
#   tcp     $FLYT_BIN run --server $FLYT_TCP_SERVER -- PROGRAM     (default tcp://127.0.0.1:7070)
# FLYT_BIN defaults to <build-dir>/bin/flyt. The Flyt modes need a Flyt server listening at those
# addresses; this script does not start one. Where the launcher is missing, those columns read n/a.
#
# Cells: pass; FAIL(rc=N), FAIL(timeout), FAIL(output) (a device_printf line missing),
# FAIL(not built); skip (the program exited 77: no CUDA device); n/a (no flyt): no launcher for
# the mode, with the reason under the table.
# Each program gets $GPU_TEST_TIMEOUT seconds (default 60).
set -u

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$script_dir/../.." && pwd)
build_dir=$repo_root/build
mode=all
out_file=
log_dir=

usage() { sed -n '2,/^set -u/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case $1 in
    --build-dir) build_dir=${2:?--build-dir needs a folder}; shift 2 ;;
    --mode) mode=${2:?--mode needs native, shm, tcp or all}; shift 2 ;;
    --out) out_file=${2:?--out needs a file}; shift 2 ;;
    --log-dir) log_dir=${2:?--log-dir needs a folder}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_matrix.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
build_dir=$(cd "$build_dir" 2>/dev/null && pwd) || { echo "run_matrix.sh: no build folder '$build_dir'" >&2; exit 2; }
case $mode in
  native|shm|tcp) modes=("$mode") ;;
  all) modes=(native shm tcp) ;;
  *) echo "run_matrix.sh: --mode must be native, shm, tcp or all, not '$mode'" >&2; exit 2 ;;
esac
log_dir=${log_dir:-$build_dir/gpu-logs}
mkdir -p "$log_dir" || exit 2

programs=(vector_add matmul_tiled streams_events constant_memory templated_kernels device_printf
          device_assert pinned_memory pitched_2d multithreaded_streams stream_callback kernel_fault)
bin_dir=$build_dir/bin/gpu
flyt_bin=${FLYT_BIN:-$build_dir/bin/flyt}
shm_server=${FLYT_SHM_SERVER:-}
tcp_server=${FLYT_TCP_SERVER:-tcp://127.0.0.1:7070}
timeout_s=${GPU_TEST_TIMEOUT:-60}

# Why a mode cannot run here (empty when it can).
unavailable_reason() {
  case $1 in
    native) ;;
    shm|tcp)
      if [ ! -e "$flyt_bin" ]; then
        echo "Flyt launcher not found: $flyt_bin does not exist (flyt is not built yet, or set FLYT_BIN)"
      elif [ ! -x "$flyt_bin" ]; then
        echo "Flyt launcher $flyt_bin is not executable"
      fi ;;
  esac
}

# The command line that runs program $2 in mode $1.
command_for() {
  case $1 in
    native) printf '%s\0' "$2" ;;
    shm) if [ -n "$shm_server" ]; then printf '%s\0' "$flyt_bin" run --server "$shm_server" -- "$2"
         else printf '%s\0' "$flyt_bin" run -- "$2"; fi ;;
    tcp) printf '%s\0' "$flyt_bin" run --server "$tcp_server" -- "$2" ;;
  esac
}

# Runs one program in one mode; prints the cell.
run_one() {
  local mode=$1 program=$2 path=$bin_dir/$2
  local stdout=$log_dir/$program.$mode.stdout stderr=$log_dir/$program.$mode.stderr
  if [ ! -x "$path" ]; then
    echo "$path: not built" > "$stderr"; : > "$stdout"
    echo "FAIL(not built)"; return
  fi
  local -a cmd
  mapfile -d '' cmd < <(command_for "$mode" "$path")
  timeout --kill-after=5 "$timeout_s" "${cmd[@]}" > "$stdout" 2> "$stderr"
  local rc=$?
  case $rc in
    0) ;;
    77) echo skip; return ;;
    124|137) echo "FAIL(timeout)"; return ;;
    *) echo "FAIL(rc=$rc)"; return ;;
  esac
  local expected=$script_dir/$program.expected
  if [ -f "$expected" ]; then
    local line missing=0
    while IFS= read -r line; do
      if ! grep -Fxq -- "$line" "$stdout"; then
        echo "missing from stdout: $line" >> "$stderr"
        missing=$((missing + 1))
      fi
    done < "$expected"
    if [ $missing -ne 0 ]; then echo "FAIL(output)"; return; fi
  fi
  echo pass
}

declare -A cell reason
for m in "${modes[@]}"; do reason[$m]=$(unavailable_reason "$m"); done
passed=0 failed=0 skipped=0 unavailable=0
for program in "${programs[@]}"; do
  for m in "${modes[@]}"; do
    if [ -n "${reason[$m]}" ]; then
      result="n/a (no flyt)"
    else
      printf 'running %-22s %-6s ... ' "$program" "$m" >&2
      result=$(run_one "$m" "$program")
      echo "$result" >&2
    fi
    cell[$program,$m]=$result
    case $result in
      pass) passed=$((passed + 1)) ;;
      skip) skipped=$((skipped + 1)) ;;
      n/a*) unavailable=$((unavailable + 1)) ;;
      *) failed=$((failed + 1)) ;;
    esac
  done
done

table() {
  printf '%-22s' program
  for m in "${modes[@]}"; do printf ' %-16s' "$m"; done
  printf '\n'
  for program in "${programs[@]}"; do
    printf '%-22s' "$program"
    for m in "${modes[@]}"; do printf ' %-16s' "${cell[$program,$m]}"; done
    printf '\n'
  done
  for m in "${modes[@]}"; do
    if [ -n "${reason[$m]}" ]; then printf 'n/a (%s): %s\n' "$m" "${reason[$m]}"; fi
  done
  printf 'logs: %s\n' "$log_dir"
  printf '%d skipped, %d n/a\n' "$skipped" "$unavailable"
  printf '%d passed, %d failed\n' "$passed" "$failed"
}

if [ -n "$out_file" ]; then
  table | tee "$out_file"
else
  table
fi
[ "$failed" -eq 0 ]
