"""Gaussian low/high-pass filters for blur denoising (A.1.2) and hybrid images (A.1.9), sized per resolution."""
from __future__ import annotations

import math

import torch
from torchvision.transforms.functional import gaussian_blur

REFERENCE_SIZE = 64  # the course states kernel sizes and sigmas for DeepFloyd's 64x64 stage I


def scaled_kernel(kernel: int, sigma: float, image_size: int) -> tuple[int, float]:
    """A (kernel, sigma) given at 64 px, rescaled so it covers the same fraction of an image_size image.

    sigma scales with the width; the kernel keeps its span in sigmas and stays odd (33, 2.0 -> 15, 0.875 at 28 px).
    """
    scale = image_size / REFERENCE_SIZE
    k = max(1, round(kernel * scale))
    return k + (k % 2 == 0), sigma * scale


def kernel_for(sigma: float) -> int:
    """An odd Gaussian kernel spanning +-3 sigma."""
    return 2 * math.ceil(3 * sigma) + 1


def lowpass(x: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Gaussian blur of (N, C, H, W) x with reflect padding."""
    if kernel == 1 or sigma <= 0:
        return x
    return gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def highpass(x: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """x minus its low-pass, so lowpass + highpass is exactly x."""
    return x - lowpass(x, kernel, sigma)
