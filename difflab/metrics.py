"""Numbers for what the pipeline makes: PSNR (and, with the classifier, Fréchet distance and accuracy)."""
from __future__ import annotations

import torch


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error."""
    return (a.float() - b.float()).pow(2).flatten(1).mean(1)


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, peak]: 10 log10(peak^2 / MSE)."""
    return 10 * torch.log10(peak ** 2 / mse(a, b).clamp_min(1e-12))
