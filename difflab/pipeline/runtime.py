"""Device choice, determinism and mixed precision: the few settings every stage shares."""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else the CPU; an explicit CUDA request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device: {name} was requested but CUDA is not available; set `device: auto` or `cpu`")
    return device


def seed_everything(seed: int) -> None:
    """Seed every generator and turn on deterministic kernels, so a stage's outputs repeat byte for byte."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed for deterministic cuBLAS
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        # GPU kernels (cuBLAS, scatter, ...) need the flag. The CPU kernels these stages use are deterministic without
        # it (the byte-identical `dvc repro -f` test checks this), and setting it imports torch._dynamo: ~1.6 s a stage.
        torch.use_deterministic_algorithms(True, warn_only=False)
        # Deterministic mode also NaN-fills every torch.empty; that only hunts bugs and costs time.
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """The path that runs: `auto` is bf16 where the hardware is fast at it (AMX / AVX512-BF16 CPUs, Ampere+ GPUs)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return "bf16" if precision == "bf16" or (precision == "auto" and bf16_supported(device)) else "fp32"


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast when `precision` resolves to bf16; weights stay fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolve_precision(device, precision) == "bf16")


def generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def randn(shape, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Gaussian noise drawn from `gen` on the generator's own device, then moved to `device`."""
    return torch.randn(tuple(shape), generator=gen, device=gen.device).to(device)


def run_info(device: torch.device, precision: str = "auto") -> dict:
    """The path a stage actually ran, for its metrics: `dvc metrics diff` then shows when two runs differ in it."""
    return {"device": str(device), "precision": resolve_precision(device, precision), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def code_fingerprint() -> str:
    """A hash of the running stage script and every difflab module loaded so far: a checkpoint made by other code
    is not resumed."""
    import hashlib
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    mods = [m for name, m in list(sys.modules.items()) if name == "__main__" or name.split(".")[0] == "difflab"]
    files = sorted({Path(m.__file__).resolve() for m in mods if getattr(m, "__file__", None)})
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(root) if f.is_relative_to(root) else f.name).encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


def write_metrics(path, metrics: dict, device: torch.device, precision: str) -> None:
    """Write a stage's metrics JSON with the path that ran under "run" (device, precision, torch, threads)."""
    import json

    from difflab.pipeline.errors import write_atomically

    write_atomically(path, json.dumps({**metrics, "run": run_info(device, precision)}, indent=2) + "\n")
