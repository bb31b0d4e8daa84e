#!/usr/bin/env bash
# make_trace_driver.sh DIR — builds DIR/libcuda.so.1: export_trace.c (a developer's probe of the
# private export tables) in front of NVIDIA's driver, every other driver function a trampoline to
# NVIDIA's. Run a program with LD_LIBRARY_PATH=DIR FLYT_TRACE_REAL_DRIVER=<NVIDIA's libcuda.so.1>
# (the script prints the line). GPU hosts only; not part of Flyt.
set -euo pipefail
dir=$1
here=$(cd "$(dirname "$0")" && pwd)
real=$(ldconfig -p | awk '/libcuda\.so\.1 /{print $NF; exit}')
real=$(readlink -f "$real")
mkdir -p "$dir"
own="cuGetExportTable cuGetProcAddress cuGetProcAddress_v2"
{
  echo '.section .note.GNU-stack,"",@progbits'
  echo '.text'
  nm -D --defined-only "$real" | awk '$2 == "T" {print $3}' | sed 's/@.*//' | sort -u | while read -r name; do
    [[ " $own " == *" $name "* ]] && continue
    printf '.globl %s\n.type %s,@function\n%s:\n  jmp *slot_%s(%%rip)\n' "$name" "$name" "$name" "$name"
  done
  echo '.data'
  nm -D --defined-only "$real" | awk '$2 == "T" {print $3}' | sed 's/@.*//' | sort -u | while read -r name; do
    [[ " $own " == *" $name "* ]] && continue
    printf 'slot_%s: .quad 0\n' "$name"
  done
  echo '.section .init_array,"aw"'
  echo '.quad fill_slots'
  echo '.text'
  echo 'fill_slots:'
  echo '  push %rbx'
  nm -D --defined-only "$real" | awk '$2 == "T" {print $3}' | sed 's/@.*//' | sort -u | while read -r name; do
    [[ " $own " == *" $name "* ]] && continue
    printf '  lea name_%s(%%rip), %%rdi\n  call flytTraceRealDriver@PLT\n  mov %%rax, slot_%s(%%rip)\n' "$name" "$name"
  done
  echo '  pop %rbx'
  echo '  ret'
  echo '.section .rodata'
  nm -D --defined-only "$real" | awk '$2 == "T" {print $3}' | sed 's/@.*//' | sort -u | while read -r name; do
    [[ " $own " == *" $name "* ]] && continue
    printf 'name_%s: .asciz "%s"\n' "$name" "$name"
  done
} >"$dir/forward.s"
gcc -shared -fPIC -O1 -o "$dir/libcuda.so.1" -Wl,-soname,libcuda.so.1 "$here/export_trace.c" "$dir/forward.s" -ldl
echo "LD_LIBRARY_PATH=$dir FLYT_TRACE_REAL_DRIVER=$real"
