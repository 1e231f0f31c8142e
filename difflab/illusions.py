"""Does an illusion work? A digit classifier judges both readings of visual anagrams and hybrid images."""
from __future__ import annotations

from typing import Callable

import torch

from difflab.filters import highpass, lowpass

Classify = Callable[[torch.Tensor], torch.Tensor]  # images N x 1 x 28 x 28 in [0, 1] -> labels (N,)


def anagram_success(upright: torch.Tensor, turned: torch.Tensor, labels: tuple[int, int], classify: Classify) -> float:
    """Fraction of anagrams whose upright image reads as labels[0] and whose transformed view reads as labels[1]."""
    ok = (classify(upright).cpu() == labels[0]) & (classify(turned).cpu() == labels[1])
    return ok.float().mean().item()


def high_frequencies(images01: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """The high-pass image as bright strokes on black: its positive part scaled to peak at 1 (the look of MNIST)."""
    hp = highpass(images01, kernel, sigma).clamp_min(0)
    return hp / hp.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)


def hybrid_success(images01: torch.Tensor, labels: tuple[int, int], classify: Classify, kernel: int,
                   sigma: float) -> float:
    """Fraction of hybrids whose low-pass reads as labels[0] and whose high-pass reads as labels[1]."""
    low = classify(lowpass(images01, kernel, sigma)).cpu() == labels[0]
    high = classify(high_frequencies(images01, kernel, sigma)).cpu() == labels[1]
    return (low & high).float().mean().item()
