#!/usr/bin/env python3
"""`flytbench torch` without a GPU and without PyTorch: what can be checked anywhere.

usage: check_torch_cli.py cli|standin FLYTBENCH WORKDIR

cli:
- `flytbench torch --help` names both points and says what the command needs;
- a python that cannot run the probe (/bin/false, a missing program, one whose `import torch`
  fails) ends flytbench with exit status 2 and a message saying why, before anything is measured;
- the whole native protocol (check, info or nodevice, ready, go, result) and the table, JSON and
  CSV, with a stand-in for PyTorch and torchvision: a TEST DOUBLE written into WORKDIR and put first
  on PYTHONPATH, which computes nothing (its "iterations" sleep 2 ms) and reports either no device
  or a device named "test double". Its figures mean nothing; only the shape is checked.
standin: the same double through `flyt run --api driver` over shm and tcp, served by a private node
on the GPU stand-in (a test double too): the probe must report Flyt's libcuda.so.1 as its driver
and the calls Flyt counted per iteration (read through its private export table) must be there.
Prints "check_torch_cli SCENARIO: all checks passed" and exits 0, or names the first failed check and exits 1.
"""
import csv
import io
import json
import os
import subprocess
import sys

POINTS = ["resnet50_infer_b32", "resnet50_train_b32"]

# The test double of torch; @DEVICE@ is replaced by True or False.
TORCH_DOUBLE = '''"""TEST DOUBLE of PyTorch for flytbench's check_torch_cli.py: no computation, no GPU."""
import contextlib
import time

DEVICE = @DEVICE@
__version__ = "0.0+test-double"


class version:
    cuda = "0.0"


class _Tensor:
    def backward(self):
        time.sleep(0.001)


class cuda:
    @staticmethod
    def is_available():
        return DEVICE

    @staticmethod
    def init():
        if not DEVICE:
            raise RuntimeError("test double: no device")

    @staticmethod
    def synchronize():
        pass

    @staticmethod
    def get_device_name(index):
        return "test double"

    @staticmethod
    def device_count():
        return 1

    @staticmethod
    def empty_cache():
        pass


class backends:
    class cudnn:
        benchmark = False


def manual_seed(seed):
    pass


def zeros(*shape, device=None):
    return _Tensor()


randn = zeros


def randint(low, high, shape, device=None):
    return _Tensor()


@contextlib.contextmanager
def no_grad():
    yield


class optim:
    class SGD:
        def __init__(self, parameters, lr, momentum):
            self.parameters = list(parameters)

        def zero_grad(self, set_to_none=True):
            pass

        def step(self):
            pass


class nn:
    class CrossEntropyLoss:
        def __call__(self, output, labels):
            return _Tensor()
'''

TORCHVISION_DOUBLE = '''"""TEST DOUBLE of torchvision for flytbench's check_torch_cli.py."""
import time

__version__ = "0.0+test-double"


class _Model:
    def cuda(self):
        return self

    def eval(self):
        return self

    def train(self):
        return self

    def parameters(self):
        return iter([])

    def __call__(self, images):
        time.sleep(0.001)
        return object()


class models:
    @staticmethod
    def resnet50(weights=None):
        return _Model()
'''


class CheckFailed(Exception):
    pass


def check(condition, what):
    if not condition:
        raise CheckFailed(what)


def run(flytbench, args, env=None):
    command = [flytbench, "torch", *args]
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=100, env=env)
    sys.stderr.write(done.stderr)
    return done


def python_with(workdir, name, device):
    """A python whose torch and torchvision are the test doubles (device: True, False, or None for
    an `import torch` that fails)."""
    packages = os.path.join(workdir, name)
    os.makedirs(os.path.join(packages, "torch"), exist_ok=True)
    os.makedirs(os.path.join(packages, "torchvision"), exist_ok=True)
    with open(os.path.join(packages, "torch", "__init__.py"), "w") as f:
        if device is None:
            f.write('raise ImportError("test double: this torch does not import")\n')
        else:
            f.write(TORCH_DOUBLE.replace("@DEVICE@", repr(device)))
    with open(os.path.join(packages, "torchvision", "__init__.py"), "w") as f:
        f.write(TORCHVISION_DOUBLE)
    wrapper = os.path.join(workdir, f"python-{name}")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nPYTHONPATH="{packages}" exec "{sys.executable}" "$@"\n')
    os.chmod(wrapper, 0o755)
    return wrapper


def check_help(flytbench):
    done = run(flytbench, ["--help"])
    check(done.returncode == 0, f"--help exited with {done.returncode}")
    for word in [*POINTS, "--python", "--iterations", "--min-time", "driver cut", "torchvision"]:
        check(word in done.stdout, f"--help does not mention {word}")
    check("--api CUT" not in done.stdout, "--help offers --api, but torch always takes the driver cut")


def check_refused(flytbench, python, expected):
    done = run(flytbench, ["--transports", "native", "--python", python])
    check(done.returncode == 2, f"--python {python}: exit status {done.returncode}, expected 2")
    check(expected in done.stderr, f"--python {python}: stderr does not say '{expected}'")
    check(done.stdout == "", f"--python {python}: something was written on stdout: {done.stdout!r}")


def check_no_device(flytbench, workdir):
    python = python_with(workdir, "nodevice", False)
    done = run(flytbench, ["--transports", "native", "--python", python, "--json", "-"])
    check(done.returncode == 0, f"no device: exit status {done.returncode}, expected 0 (native skipped)")
    doc = json.loads(done.stdout)
    check(doc["test"] == "torch" and doc["options"]["points"] == POINTS, f"no device: test or points: {doc}")
    native = doc["transports"][0]
    check(native["status"] == "skipped" and "no CUDA device" in native["note"], f"no device: {native}")
    check([r["point"] for r in doc["results"]] == POINTS, "no device: one result per point expected")
    check(all(r["status"] == "skipped" and r["ms"] is None for r in doc["results"]), "no device: not skipped")


def check_measured(flytbench, workdir):
    python = python_with(workdir, "device", True)
    json_path = os.path.join(workdir, "torch.json")
    csv_path = os.path.join(workdir, "torch.csv")
    args = ["--transports", "native", "--python", python, "--min-time", "0.05", "--iterations", "4",
            "--sync-every", "2", "--warmup", "1", "--json", json_path, "--csv", csv_path]
    done = run(flytbench, args)
    check(done.returncode == 0, f"double: exit status {done.returncode}; stdout:\n{done.stdout}")
    for point in POINTS:
        check(point in done.stdout and " ms" in done.stdout, f"double: the table lacks {point} in ms")
    check("PyTorch 0.0+test-double" in done.stdout, "double: the table does not name PyTorch's version")
    with open(json_path) as f:
        doc = json.load(f)
    check(doc["options"]["iterations"] == 4 and doc["options"]["sync_every"] == 2, "double: options")
    check(doc["transports"][0]["status"] == "ok", f"double: native did not run: {doc['transports'][0]}")
    for r in doc["results"]:
        where = f"double {r['point']}"
        check(r["status"] == "ok", f"{where}: {r['status']} ({r['error']})")
        check(r["iterations"] >= 4 and r["iterations"] % 2 == 0, f"{where}: {r['iterations']} iterations")
        check(r["ms"] > 0 and abs(r["ms"] * 1e3 - r["us"]) < 1e-6 * r["us"], f"{where}: ms {r['ms']}, us {r['us']}")
        check(r["calls_per_iteration"] is None and r["waited_per_iteration"] is None,
              f"{where}: natively there are no Flyt counts")
        client = r["clients"][0]
        check(client["calls"] == -1 and client["waited"] == -1 and client["messages"] == -1,
              f"{where}: the probe's counts natively are not -1: {client}")
    with open(csv_path) as f:
        rows = list(csv.DictReader(io.StringIO(f.read())))
    check([row["point"] for row in rows] == POINTS, "double: CSV rows")
    check(all(row["test"] == "torch" and float(row["ms"]) > 0 and row["calls_per_iteration"] == "" for row in rows),
          f"double: CSV values: {rows}")


def check_standin(flytbench, workdir):
    python = python_with(workdir, "device", True)
    done = run(flytbench, ["--transports", "shm,tcp", "--executor", "standin", "--python", python, "--min-time",
                           "0.05", "--iterations", "3", "--warmup", "1", "--json", "-"])
    check(done.returncode == 0, f"stand-in: exit status {done.returncode}; stdout:\n{done.stdout}")
    doc = json.loads(done.stdout)
    check([t["name"] for t in doc["transports"]] == ["shm", "tcp"], "stand-in: transports")
    for t in doc["transports"]:
        check(t["status"] == "ok", f"stand-in {t['name']}: {t['note']}")
        driver = t["infos"][0]["driver"]
        check(os.path.samefile(driver, doc["flyt_runtime"]), f"stand-in {t['name']}: driver {driver}, not Flyt's")
    for r in doc["results"]:
        where = f"stand-in {r['transport']} {r['point']}"
        check(r["status"] == "ok" and r["ms"] > 0, f"{where}: {r['status']} ({r['error']})")
        for count in ("calls_per_iteration", "waited_per_iteration", "messages_per_iteration"):
            check(r[count] is not None and r[count] >= 0, f"{where}: {count} is {r[count]}")


def main(argv):
    scenario, flytbench, workdir = argv[1], argv[2], argv[3]
    os.makedirs(workdir, exist_ok=True)
    try:
        if scenario == "standin":
            check_standin(flytbench, workdir)
        else:
            check_help(flytbench)
            check_refused(flytbench, "/bin/false", "needs PyTorch and torchvision")
            check_refused(flytbench, os.path.join(workdir, "no-such-python"), "not an executable program")
            check_refused(flytbench, python_with(workdir, "noimport", None), "this torch does not import")
            check_no_device(flytbench, workdir)
            check_measured(flytbench, workdir)
    except CheckFailed as failed:
        print(f"check_torch_cli {scenario}: FAILED: {failed}")
        return 1
    print(f"check_torch_cli {scenario}: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
