"""Training throughput of the spec UNets: fp32 eager (reference) vs the fast path, measured side by side.

Prints images/s per config and path, achieved GFLOP/s (counted with torch.utils.flop_counter) against the bf16 and
fp32 matmul peaks measured in the same run, and ends with `speedup: <fast / reference on D=64>`.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from difflab.core.families import build_model, make_family
from difflab.core.schedule import NoiseSchedule
from difflab.pipeline.runtime import autocast


def matmul_peak(dtype: torch.dtype, seconds: float) -> float:
    """GFLOP/s of a large square matmul in `dtype` (the machine's practical limit)."""
    a = torch.randn(2048, 2048, dtype=dtype)
    b = torch.randn(2048, 2048, dtype=dtype)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 2048 ** 3 * n / (time.perf_counter() - start) / 1e9


def cpu_name() -> str:
    import platform
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# The reference, then each candidate for the fast path alone and combined: keep only what measures faster.
PATHS = {
    "fp32": dict(precision="fp32"),
    "bf16": dict(precision="auto"),
    "bf16+cl": dict(precision="auto", channels_last=True),
    "bf16+fused": dict(precision="auto", fused_adam=True),
}


def step_fn(kind: str, hidden: int, batch: int, precision: str = "fp32", channels_last: bool = False,
            fused_adam: bool = False):
    torch.manual_seed(0)
    model = build_model(kind, hidden)
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3, fused=fused_adam or None)
    gen, family = torch.Generator().manual_seed(0), make_family(kind, NoiseSchedule.linear())
    device = torch.device("cpu")

    def step():
        with autocast(device, precision):
            value = family.loss(model, x, y, gen)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    return step


def flops_per_step(step) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def images_per_second(step, batch: int, seconds: float) -> float:
    for _ in range(2):
        step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3:
        step()
        n += 1
    return batch * n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short timings (< 1 minute in all)")
    ap.add_argument("--kind", default="class_ddpm")
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    seconds = 2.0 if args.quick else 10.0
    widths = (32, 64) if args.quick else (32, 64, 128)
    peak32, peak16 = matmul_peak(torch.float32, seconds / 2), matmul_peak(torch.bfloat16, seconds / 2)
    print(f"{cpu_name()}, threads {torch.get_num_threads()}; matmul peak: fp32 {peak32:.0f} GFLOP/s, "
          f"bf16 {peak16:.0f} GFLOP/s; bf16/fp32 peak ratio {peak16 / peak32:.2f} (the ceiling of any bf16 speedup)")
    print(f"{'config':<22}{'path':<12}{'img/s':>9}{'GFLOP/s':>10}{'% fp32 pk':>10}{'% bf16 pk':>10}")
    speedup = None
    for d in widths:
        rates = {}
        for path, options in PATHS.items():
            step = step_fn(args.kind, d, args.batch, **options)
            flops = flops_per_step(step)
            ips = images_per_second(step, args.batch, seconds)
            gflops = flops / args.batch * ips / 1e9
            rates[path] = ips
            print(f"{args.kind} D={d} B={args.batch:<6}{path:<12}{ips:>9.0f}{gflops:>10.1f}"
                  f"{100 * gflops / peak32:>10.0f}{100 * gflops / peak16:>10.0f}", flush=True)
        best = max((p for p in rates if p != "fp32"), key=rates.get)
        print(f"  D={d}: fastest path {best}, {rates[best] / rates['fp32']:.2f}x fp32; "
              f"bf16 autocast alone {rates['bf16'] / rates['fp32']:.2f}x")
        if d == 64:
            speedup = rates["bf16"] / rates["fp32"]  # the path difflab.train uses
    print(f"speedup: {speedup:.2f}")


if __name__ == "__main__":
    main()
