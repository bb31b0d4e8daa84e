"""PyTorch on whatever libcuda.so.1 the process loads: run natively and under `flyt run --api driver`.

Checks a matmul (cuBLAS), a convolution (cuDNN) and an elementwise kernel against the CPU, then times
a small MLP training step. Prints "torch_check: all checks passed" and one line
"torch_check: train step <ms> ms" (the median of the timed steps).
"""
import statistics
import sys
import time

import torch


def main() -> int:
    if not torch.cuda.is_available():
        print("torch_check: FAILED: torch.cuda.is_available() is False", file=sys.stderr)
        return 1
    dev = torch.device("cuda")
    print(f"torch_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"{torch.cuda.device_count()} device(s)")
    torch.manual_seed(0)
    a = torch.randn(1024, 1024, device=dev)
    b = torch.randn(1024, 1024, device=dev)
    got = (a @ b).cpu()
    want = a.cpu() @ b.cpu()
    assert torch.allclose(got, want, rtol=1e-3, atol=1e-2), "matmul differs from the CPU"
    x = torch.randn(8, 3, 64, 64, device=dev)
    conv = torch.nn.Conv2d(3, 16, 3).to(dev)
    got = conv(x).detach().cpu()
    want = torch.nn.functional.conv2d(x.cpu(), conv.weight.detach().cpu(), conv.bias.detach().cpu())
    assert torch.allclose(got, want, rtol=1e-3, atol=1e-3), "conv2d differs from the CPU"
    y = (torch.sin(a) * 2 + 1).cpu()
    assert torch.allclose(y, torch.sin(a.cpu()) * 2 + 1, atol=1e-5), "elementwise kernel differs"
    free, total = torch.cuda.mem_get_info()
    assert 0 < free <= total

    model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 1024)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    data = torch.randn(256, 1024, device=dev)
    target = torch.randn(256, 1024, device=dev)
    times = []
    for step in range(60):
        torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(data), target)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        if step >= 10:
            times.append((time.perf_counter() - start) * 1000)
    assert torch.isfinite(loss).item()
    print(f"torch_check: train step {statistics.median(times):.3f} ms (median of {len(times)})")
    print("torch_check: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
