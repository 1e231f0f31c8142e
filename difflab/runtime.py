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


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast where the hardware has fast bf16 (AMX / AVX512-BF16 CPUs, Ampere+ GPUs); weights stay fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    use = precision == "bf16" or (precision == "auto" and bf16_supported(device))
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use)


def generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)
