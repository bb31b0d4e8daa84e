#!/usr/bin/env python3
"""torch_probe.py: the measured process of `flytbench torch`, PyTorch's counterpart of probe.cu.

It speaks probe.cu's line protocol (one JSON object per line on stdout, commands on stdin), so that
flytbench drives it as it drives flytbench-probe:
  -> {"kind":"info","cudart":PATH,"driver":PATH,"device":NAME,"devices":N,"torch":V,...}  first line
     {"kind":"nodevice","error":TEXT}     instead, when torch.cuda.is_available() is false; exit 77
  for every point of --points, in that order:
  -> {"kind":"ready","test":"torch","point":NAME}    model built, warm-up done
  <- "go"                                            measure now; "quit" or end of input: exit 0
  -> {"kind":"result","test":"torch","point":NAME,"iterations":K,"start_ns":T0,"end_ns":T1,
      "seconds":S,"us":MICROSECONDS_PER_ITERATION,"ms":...,"calls":C,"waited":W,"messages":M}
  -> {"kind":"error","what":WHERE,"error":TEXT}      any failure, then exit 1
Stamps are CLOCK_MONOTONIC nanoseconds. C, W, M: calls forwarded, calls waited for (round trips)
and messages sent per iteration, read from Flyt's libcuda.so.1 (its private export table); -1 where
the driver is NVIDIA's (natively).

  torch_probe.py check    one line {"kind":"check","torch":V,"torchvision":V,"python":V}, exit 0, or
                          an error line and exit 1: whether this python can run the probe at all
  torch_probe.py run --points LIST [--min-time S] [--iterations N] [--sync-every N] [--warmup N]

Points: resnet50_infer_b32 (torchvision ResNet-50, random weights, eval, no_grad, a batch of 32
3x224x224 fp32 images) and resnet50_train_b32 (one training step on such a batch: zero_grad,
forward, cross-entropy on random labels, backward, SGD step with lr 0.01 and momentum 0.9).
Iterations are queued in rounds of --sync-every, each ended by torch.cuda.synchronize(); rounds
repeat until --min-time seconds and --iterations iterations have passed.

Only the protocol goes to stdout: fd 1 is pointed at stderr at start (PyTorch, cuDNN and Flyt may
print), the protocol keeps a duplicate of the original. Exit status: 0 done or told to quit, 1 a
failure, 2 bad arguments, 3 flytbench went away (a write to the protocol failed), 77 no device.
"""
import argparse
import ctypes
import json
import os
import sys
import time
import traceback

EXIT_FAILED = 1
EXIT_DRIVER_GONE = 3
EXIT_NO_DEVICE = 77
POINTS = ("resnet50_infer_b32", "resnet50_train_b32")
BATCH = 32

# Flyt's private export table of its libcuda.so.1 (api/include/flyt/api/cu_identity.hpp).
FLYT_IDENTITY_UUID = b"Flyt libcuda.so1"
_CallCounts = ctypes.CFUNCTYPE(None, *(ctypes.POINTER(ctypes.c_uint64),) * 3)


class _IdentityTable(ctypes.Structure):
    _fields_ = [("bytes", ctypes.c_size_t), ("deviceStatus", ctypes.c_void_p), ("callCounts", _CallCounts)]


_protocol = None  # the original stdout


def emit(**message):
    try:
        _protocol.write(json.dumps(message, separators=(",", ":")) + "\n")
        _protocol.flush()
    except OSError:
        sys.exit(EXIT_DRIVER_GONE)


def fail(what, error):
    """Reports `error` (its first line; the traceback goes to stderr) and exits."""
    traceback.print_exc()
    lines = str(error).strip().splitlines()
    emit(kind="error", what=what, error=f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__)
    sys.exit(EXIT_FAILED)


def now_ns():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def await_go():
    """True on "go", False on "quit" or end of input."""
    while True:
        line = sys.stdin.readline()
        if not line or line.startswith("quit"):
            return False
        if line.startswith("go"):
            return True


def take_protocol_stream():
    global _protocol
    fd = os.dup(1)
    os.dup2(2, 1)
    _protocol = os.fdopen(fd, "w", buffering=1)
    sys.stdout = sys.stderr


# ---- what serves the process -------------------------------------------------------------------

def mappings():
    """(start, end, path) of every file mapped into this process."""
    out = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].startswith("/"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                out.append((start, end, fields[5].rstrip("\n")))
    return out


def mapped_library(maps, prefix, address=None):
    """The realpath of the mapped library containing `address`, else the first whose name starts
    with `prefix` and contains ".so"; "unknown" when none is mapped."""
    if address:
        for start, end, path in maps:
            if start <= address < end:
                return os.path.realpath(path)
    for _, _, path in maps:
        name = os.path.basename(path)
        if name.startswith(prefix) and ".so" in name:
            return os.path.realpath(path)
    return "unknown"


def driver_library():
    """The process's libcuda.so.1, the one PyTorch loaded (dlopen of the same name: the same
    handle); None when there is none."""
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None


class CallCounts:
    """Flyt's per-session counts, through its libcuda.so.1's private export table; absent (None
    from read()) where the driver is NVIDIA's, which returns an error for the unknown UUID."""

    def __init__(self, driver):
        self._read = None
        if driver is None or not hasattr(driver, "cuGetExportTable"):
            return
        get = driver.cuGetExportTable
        get.restype = ctypes.c_int
        get.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p]
        table = ctypes.c_void_p()
        if get(ctypes.byref(table), FLYT_IDENTITY_UUID) != 0 or not table.value:
            return
        # Fields are only ever added at the end: read the size before anything beyond it.
        if ctypes.c_size_t.from_address(table.value).value < ctypes.sizeof(_IdentityTable):
            return
        entry = _IdentityTable.from_address(table.value)
        if entry.callCounts:
            self._read = entry.callCounts

    def read(self):
        if self._read is None:
            return None
        counts = [ctypes.c_uint64(0) for _ in range(3)]
        self._read(*(ctypes.byref(c) for c in counts))
        return [c.value for c in counts]


def report_device(torch, torchvision):
    if not torch.cuda.is_available():
        reason = "torch.cuda.is_available() is False"
        try:
            torch.cuda.init()
        except Exception as error:  # the reason, where PyTorch gives one
            reason = str(error).splitlines()[0] if str(error) else reason
        emit(kind="nodevice", error=reason)
        sys.exit(EXIT_NO_DEVICE)
    torch.cuda.init()
    torch.zeros(1, device="cuda")  # a context: the runtime and the driver are loaded now
    torch.cuda.synchronize()
    driver = driver_library()
    maps = mappings()
    cu_init = ctypes.cast(driver.cuInit, ctypes.c_void_p).value if driver is not None else None
    emit(kind="info", cudart=mapped_library(maps, "libcudart"), driver=mapped_library(maps, "libcuda.so", cu_init),
         device=torch.cuda.get_device_name(0), devices=torch.cuda.device_count(), torch=torch.__version__,
         torchvision=torchvision.__version__, cuda=str(torch.version.cuda))
    return CallCounts(driver)


# ---- the points --------------------------------------------------------------------------------

def build(torch, torchvision, point):
    """The model and one iteration of `point`, as a function."""
    torch.manual_seed(0)
    try:
        model = torchvision.models.resnet50(weights=None)
    except TypeError:  # torchvision before 0.13
        model = torchvision.models.resnet50(pretrained=False)
    model = model.cuda()
    images = torch.randn(BATCH, 3, 224, 224, device="cuda")
    if point == "resnet50_infer_b32":
        model.eval()

        def infer():
            with torch.no_grad():
                model(images)
        return model, infer
    labels = torch.randint(0, 1000, (BATCH,), device="cuda")
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), labels).backward()
        optimizer.step()
    return model, train


def per_iteration(before, after, iterations):
    if before is None or after is None:
        return [-1, -1, -1]
    return [round((a - b) / iterations, 3) for a, b in zip(after, before)]


def measure(torch, step, args, counts, point):
    """False when flytbench said quit."""
    for _ in range(args.warmup):  # cuDNN's autotuning and the caching allocator settle here
        step()
    torch.cuda.synchronize()
    emit(kind="ready", test="torch", point=point)
    if not await_go():
        return False
    min_ns = int(args.min_time * 1e9)
    before = counts.read()
    iterations = 0
    start = end = now_ns()
    while iterations < args.iterations or end - start < min_ns:
        for _ in range(args.sync_every):
            step()
        torch.cuda.synchronize()
        iterations += args.sync_every
        end = now_ns()
    calls, waited, messages = per_iteration(before, counts.read(), iterations)
    us = (end - start) / 1e3 / iterations
    emit(kind="result", test="torch", point=point, iterations=iterations, start_ns=start, end_ns=end,
         seconds=(end - start) / 1e9, us=round(us, 3), ms=round(us / 1e3, 6), calls=calls, waited=waited,
         messages=messages)
    return True


def run(args):
    try:
        import torch
        import torchvision
    except Exception as error:
        fail("import torch, torchvision", error)
    try:
        counts = report_device(torch, torchvision)
    except Exception as error:
        fail("CUDA initialisation", error)
    torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest algorithms
    for point in args.points:
        where = f"{point}: build and warm up"
        try:
            model, step = build(torch, torchvision, point)
            where = f"{point}: measure"
            if not measure(torch, step, args, counts, point):
                return 0
            del model, step
            torch.cuda.empty_cache()
        except Exception as error:
            fail(where, error)
    return 0


def check():
    try:
        import torch
        import torchvision
    except Exception as error:
        fail("import torch, torchvision", error)
    emit(kind="check", python=sys.version.split()[0], torch=torch.__version__, torchvision=torchvision.__version__)
    return 0


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse(argv):
    parser = argparse.ArgumentParser(prog="torch_probe.py",
                                     description="Run by flytbench torch (see the top of the file).")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check")
    measured = commands.add_parser("run")
    measured.add_argument("--points", default=",".join(POINTS))
    measured.add_argument("--min-time", type=float, default=15.0)
    measured.add_argument("--iterations", type=positive, default=10)
    measured.add_argument("--sync-every", type=positive, default=1)
    measured.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    if args.command == "run":
        args.points = [p for p in args.points.split(",") if p]
        unknown = [p for p in args.points if p not in POINTS]
        if unknown or not args.points:
            parser.error(f"--points takes {', '.join(POINTS)}")
    return args


def main(argv):
    args = parse(argv)  # usage errors exit 2 on stderr, before the protocol starts
    take_protocol_stream()
    return check() if args.command == "check" else run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
