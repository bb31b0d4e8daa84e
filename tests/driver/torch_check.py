"""PyTorch on whatever libcuda.so.1 the process loads: run natively and under `flyt run --api driver`.

Stages (each reported on its own line, a failing one does not stop the others): device queries and
NVML's device count, tensor copies (bit-identical round trips), elementwise kernels, cuBLAS matmul in
fp32 and bf16, a cuDNN convolution, autograd training of an MLP and of a small CNN, memory queries,
torchvision ResNet-50 inference, torch.compile of a small model, and, under Flyt, the process
itself (no NVIDIA driver library mapped, no /dev/nvidia* open).

  torch_check.py [--save FILE | --compare FILE] [--skip STAGE,...]

--save writes every stage's results (natively); --compare checks them against a saved run: equal
where the computation is deterministic on the same GPU, else within float tolerance. Prints
"torch_check: all checks passed" and timing lines "torch_check: <what> <ms> ms".
"""
import argparse
import os
import statistics
import sys
import time
import traceback

import torch

results = {}
failures = []


def stage(name):
    def wrap(fn):
        fn.stage_name = name
        return fn
    return wrap


def timed(fn, steps=30, warmup=5):
    times = []
    for step in range(steps + warmup):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        if step >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


@stage("devices")
def devices(dev):
    assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
    count = torch.cuda.device_count()
    assert count >= 1
    props = torch.cuda.get_device_properties(0)
    print(f"torch_check: {props.name}, {props.total_memory >> 20} MiB, cc {props.major}.{props.minor}, "
          f"{props.multi_processor_count} SMs, torch {torch.__version__}, CUDA {torch.version.cuda}, {count} device(s)")
    nvml = torch.cuda._raw_device_count_nvml()
    assert nvml == count, f"NVML counts {nvml} device(s), the driver {count}"
    results["devices"] = torch.tensor([count, props.major, props.minor, props.multi_processor_count])


@stage("copies")
def copies(dev):
    g = torch.Generator().manual_seed(1)
    host = torch.randn(4 << 20, generator=g)
    back = host.to(dev).cpu()
    assert torch.equal(host, back), "host -> device -> host differs"
    pinned = host.pin_memory()
    back = pinned.to(dev, non_blocking=True).to("cpu", non_blocking=True)
    torch.cuda.synchronize()
    assert torch.equal(host, back), "pinned round trip differs"
    odd = torch.arange(12345, dtype=torch.int32).to(dev)[1::3].contiguous().cpu()
    assert torch.equal(odd, torch.arange(12345, dtype=torch.int32)[1::3]), "strided copy differs"
    results["copies"] = back[:1024].clone()


@stage("elementwise")
def elementwise(dev):
    # Repeated with several seeds: an intermittent wrong result over shared memory was seen here.
    # On a mismatch, the second reads tell which side is wrong (the device result or the copy of
    # its input) and where the wrong elements lie (1 MiB pieces of 262144 floats).
    for seed in range(12):
        torch.manual_seed(seed)
        a = torch.randn(1024, 1024, device=dev)
        y = (torch.sin(a) * 2 + 1).cpu()
        host_a = a.cpu()
        want = torch.sin(host_a) * 2 + 1
        wrong = ((y - want).abs() > 1e-5).flatten()
        if wrong.any():
            again_a = a.cpu()
            again_y = (torch.sin(a) * 2 + 1).cpu()
            where = wrong.nonzero().flatten()
            first = int(where[0])
            raise AssertionError(
                f"elementwise kernel differs from the CPU (seed {seed}) at {int(wrong.sum())} of {y.numel()} places, "
                f"indices {first}..{int(where[-1])} (pieces {first // 262144}..{int(where[-1]) // 262144}): "
                f"{float(y.flatten()[first])} for {float(want.flatten()[first])}; input read again "
                f"{'equal' if torch.equal(again_a, host_a) else 'DIFFERENT'}, result read again "
                f"{'equal' if torch.equal(again_y, y) else 'different'} and "
                f"{'right' if not ((again_y - want).abs() > 1e-5).any() else 'wrong'}; "
                f"wrong value is sin*2 {abs(float(y.flatten()[first]) - (float(want.flatten()[first]) - 1)) < 1e-5}, "
                f"sin {abs(float(y.flatten()[first]) - (float(want.flatten()[first]) - 1) / 2) < 1e-5}, "
                f"zero {float(y.flatten()[first]) == 0.0}")
    torch.manual_seed(0)
    a = torch.randn(1024, 1024, device=dev)
    y = (torch.sin(a) * 2 + 1).cpu()
    s = a.sum().item()
    assert abs(s - a.cpu().sum().item()) < 1e-1, "reduction differs"
    results["elementwise"] = y


@stage("matmul")
def matmul(dev):
    torch.manual_seed(0)
    a = torch.randn(1024, 1024, device=dev)
    b = torch.randn(1024, 1024, device=dev)
    got = (a @ b).cpu()
    want = a.cpu() @ b.cpu()
    assert torch.allclose(got, want, rtol=1e-3, atol=1e-2), "fp32 matmul differs from the CPU"
    bf = (a.bfloat16() @ b.bfloat16()).float().cpu()
    assert torch.allclose(bf, want, rtol=5e-2, atol=1.0), "bf16 matmul differs from the CPU"
    results["matmul"] = got
    results["matmul_bf16"] = bf


@stage("conv")
def conv(dev):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 64, 64, device=dev)
    layer = torch.nn.Conv2d(3, 16, 3).to(dev)
    got = layer(x).detach().cpu()
    want = torch.nn.functional.conv2d(x.cpu(), layer.weight.detach().cpu(), layer.bias.detach().cpu())
    assert torch.allclose(got, want, rtol=1e-3, atol=1e-3), "conv2d differs from the CPU"
    results["conv"] = got


@stage("mlp")
def mlp(dev):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 1024)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    data = torch.randn(256, 1024, device=dev)
    target = torch.randn(256, 1024, device=dev)
    losses = []

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(data), target)
        loss.backward()
        opt.step()
        losses.append(loss.detach())

    ms = timed(step, steps=50, warmup=10)
    assert all(torch.isfinite(l).item() for l in losses)
    assert losses[-1].item() < losses[0].item(), "the MLP's loss did not fall"
    print(f"torch_check: train step {ms:.3f} ms (MLP, median of 50)")
    results["mlp"] = torch.stack(losses).cpu()


@stage("cnn")
def cnn(dev):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(64, 10)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(64, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (64,), device=dev)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    losses = torch.stack(losses).cpu()
    assert torch.isfinite(losses).all() and losses[-1] < losses[0], "the CNN's loss did not fall"
    results["cnn"] = losses


@stage("memory")
def memory(dev):
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    block = torch.empty(64 << 20, dtype=torch.uint8, device=dev)
    assert torch.cuda.memory_allocated() - before >= 64 << 20, "memory_allocated did not grow"
    free, total = torch.cuda.mem_get_info()
    assert 0 < free <= total, f"mem_get_info: free {free}, total {total}"
    del block
    torch.cuda.empty_cache()


@stage("resnet50")
def resnet50(dev):
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.resnet50().to(dev).eval()
    x = torch.randn(32, 3, 224, 224, device=dev)
    with torch.no_grad():
        out = model(x)
        ms = timed(lambda: model(x), steps=20, warmup=3)
    print(f"torch_check: resnet50 inference {ms:.3f} ms (batch 32, median of 20)")
    assert torch.isfinite(out).all()
    results["resnet50"] = out.cpu()


@stage("compile")
def compiled(dev):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.GELU(), torch.nn.Linear(256, 64)).to(dev)
    fast = torch.compile(model)
    x = torch.randn(128, 256, device=dev)
    got = fast(x).detach()
    want = model(x).detach()
    assert torch.allclose(got, want, rtol=1e-3, atol=1e-4), "torch.compile's result differs from eager"
    results["compile"] = got.cpu()


@stage("process")
def process(dev):
    if "lib/driver/libcuda.so.1" not in os.environ.get("LD_PRELOAD", ""):
        return  # native run
    ours = {os.path.realpath(p) for p in os.environ["LD_PRELOAD"].split(":") if p}
    for line in open("/proc/self/maps"):
        path = line.split(maxsplit=5)[5].strip() if len(line.split()) >= 6 else ""
        name = os.path.basename(path)
        if name.startswith("libcuda.so") or name.startswith("libnvidia-"):
            assert os.path.realpath(path) in ours, f"a driver library not Flyt's is mapped: {path}"
        assert not path.startswith("/dev/nvidia"), f"an NVIDIA device is mapped: {path}"
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        assert not target.startswith("/dev/nvidia"), f"an NVIDIA device is open: {target}"


STAGES = [devices, copies, elementwise, matmul, conv, mlp, cnn, memory, resnet50, compiled, process]


def compare(saved):
    for key, want in saved.items():
        got = results.get(key)
        if got is None:
            continue
        exact = key in ("devices", "copies", "elementwise")
        ok = torch.equal(got, want) if exact else torch.allclose(got, want, rtol=1e-3, atol=1e-3)
        if not ok:
            diff = (got.float() - want.float()).abs().max().item() if got.shape == want.shape else "shape"
            failures.append(f"compare {key}: differs from the native run (max difference {diff})")
        else:
            print(f"torch_check: {key} {'bit-identical to' if torch.equal(got, want) else 'within tolerance of'} native")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--save")
    parser.add_argument("--compare")
    parser.add_argument("--skip", default="")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    dev = torch.device("cuda")
    for fn in STAGES:
        if fn.stage_name in skip:
            continue
        start = time.perf_counter()
        try:
            fn(dev)
            print(f"torch_check: stage {fn.stage_name}: ok ({time.perf_counter() - start:.1f} s)", flush=True)
        except Exception as e:  # every stage reports, whatever failed before it
            failures.append(f"stage {fn.stage_name}: {type(e).__name__}: {e}")
            print(f"torch_check: stage {fn.stage_name}: FAILED: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc()
            if fn.stage_name == "devices":
                break
    if args.save:
        torch.save(results, args.save)
    if args.compare and os.path.exists(args.compare):
        compare(torch.load(args.compare))
    for failure in failures:
        print(f"torch_check: FAILED: {failure}", file=sys.stderr)
    if failures:
        return 1
    print("torch_check: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
