#!/bin/sh
# check_output.sh PROGRAM EXPECTED_FILE
# Runs PROGRAM and checks that every line of EXPECTED_FILE appears, whole, in its stdout (in any
# order: device threads print in no fixed order). Exits with PROGRAM's status when that is not 0
# (77, skipped, passes through), 1 when a line is missing, 0 otherwise.
set -u
program=$1
expected=$2
output=$("$program")
status=$?
printf '%s\n' "$output"
if [ "$status" -ne 0 ]; then
  exit "$status"
fi
missing=0
while IFS= read -r line; do
  if ! printf '%s\n' "$output" | grep -Fxq -- "$line"; then
    echo "FAIL: missing from stdout: $line" >&2
    missing=$((missing + 1))
  fi
done < "$expected"
if [ "$missing" -ne 0 ]; then
  echo "FAIL: $missing expected line(s) missing from $program's stdout" >&2
  exit 1
fi
echo "all $(wc -l < "$expected") expected lines found in stdout"
