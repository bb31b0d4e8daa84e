#!/usr/bin/env python3
"""check_launch_packing.py COMMAND...: runs launch_path through Flyt (COMMAND, e.g. run_through_flyt.sh)
and, when it ran on the GPU stand-in, checks the parameter blocks the stand-in printed for each launch
("flyt-standin: launch <kernel> grid=... block=... shmem=... params=<hex>") against the argument values
launch_path.cu uses, packed here independently by the x86-64/CUDA ABI. Padding bytes are not compared
(their host values are indeterminate). On a GPU there are no such lines: launch_path checks the
kernels' results itself. Exits 0 when the program passed and every expected launch matched."""
import os
import re
import struct
import subprocess
import sys

LINE = re.compile(r"^flyt-standin: launch (\S+) grid=\((\d+),(\d+),(\d+)\) block=\((\d+),(\d+),(\d+)\) "
                  r"shmem=(\d+) params=([0-9a-f]*)$")


def mixed(a, b, c, v, c2, d, out):
    # struct Params {int a; double b; char c; float v[3];} (32 bytes), char, double, double*.
    return 56, [(0, struct.pack("<i", a)), (8, struct.pack("<d", b)), (16, c.encode()),
                (20, struct.pack("<3f", *v)), (32, c2.encode()), (40, struct.pack("<d", d)),
                (48, struct.pack("<Q", out))]


def packing(out):
    # S12 {int, float, char} (12 bytes), char, double, const void*, Big (1024 bytes), short, u64*.
    big = bytes((i * 7 + 3) & 0xff for i in range(1024))
    return 1072, [(0, struct.pack("<if", 0x01020304, -2.5)), (8, b"S"), (12, b"c"),
                  (16, struct.pack("<d", 6.125)), (24, struct.pack("<Q", 0x1122334455667788)),
                  (32, big), (1056, struct.pack("<h", -12345)), (1064, struct.pack("<Q", out))]


def expected(stdout):
    outs = dict(re.findall(r"^launch_path: (\w+) out=(?:0x)?([0-9a-f]+)$", stdout, re.M))
    mixed_out = int(outs["mixed"], 16)
    return [
        ("_Z5mixed6ParamscdPd", (1, 1, 1), (32, 1, 1), 0,
         mixed(-7, 1.25, "q", (1.0, 2.0, 3.0), "z", 2.5, mixed_out)),
        ("_Z5countv", (2, 1, 1), (64, 1, 1), 0, (0, [])),
        ("_Z5countv", (3, 1, 1), (32, 1, 1), 0, (0, [])),
        ("_Z5mixed6ParamscdPd", (1, 1, 1), (1, 1, 1), 0,
         mixed(40, -0.5, "k", (0.5, 0.25, 0.125), "m", -3.75, mixed_out)),
        ("_Z7packing3S12cdPKv3BigsPy", (2, 3, 1), (64, 2, 1), 128, packing(int(outs["packing"], 16))),
    ]


def main():
    # The stand-in prints each launch only when asked; the node and its workers inherit this.
    env = dict(os.environ, FLYT_STANDIN_TRACE_LAUNCHES="1")
    run = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True, env=env)
    sys.stdout.write(run.stdout)
    if run.returncode != 0 or "launch_path: all checks passed" not in run.stdout:
        print(f"check_launch_packing: the program failed (status {run.returncode})")
        return 1
    if "(stand-in" not in run.stdout:
        print("check_launch_packing: ran on a GPU, no stand-in launches to check: packing checks passed")
        return 0
    launches = [LINE.match(line) for line in run.stdout.splitlines() if line.startswith("flyt-standin: launch")]
    wanted = expected(run.stdout)
    if len(launches) != len(wanted) or not all(launches):
        print(f"check_launch_packing: {len(launches)} launch lines, expected {len(wanted)}")
        return 1
    for got, (name, grid, block, shmem, (size, fields)) in zip(launches, wanted):
        params = bytes.fromhex(got.group(9))
        where = f"launch of {got.group(1)}"
        if got.group(1) != name:
            print(f"check_launch_packing: {where}, expected {name}")
            return 1
        if tuple(map(int, got.group(2, 3, 4))) != grid or tuple(map(int, got.group(5, 6, 7))) != block or \
                int(got.group(8)) != shmem:
            print(f"check_launch_packing: {where}: configuration {got.group(0)}")
            return 1
        if len(params) != size:
            print(f"check_launch_packing: {where}: {len(params)} parameter bytes, expected {size}")
            return 1
        for offset, value in fields:
            if params[offset:offset + len(value)] != value:
                print(f"check_launch_packing: {where}: bytes at {offset} are "
                      f"{params[offset:offset + len(value)].hex()}, expected {value.hex()}")
                return 1
    print(f"check_launch_packing: {len(wanted)} stand-in launches packed as expected: packing checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
