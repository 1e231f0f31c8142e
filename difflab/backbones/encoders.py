"""What `embed_prompts` runs: a backbone's text encoder alone, never its denoiser.

Kept apart from the backbones' denoising code (difflab.backbones.mnist imports the samplers' reverse-process steps and
the inference fold) so that editing those re-runs Part A, not the prompt embedding, which on DeepFloyd IF is a T5-XXL
pass. The DeepFloyd backbone embeds with its own T5 only and loads IF lazily, so it serves as its own encoder.
"""
from __future__ import annotations

from typing import Protocol

import torch

from difflab.backbones.base import BACKBONES
from difflab.pipeline.digit_prompts import DIGIT_WORDS, parse_prompt


class Encoder(Protocol):
    name: str

    def embed(self, prompts: list[str]) -> torch.Tensor: ...


class DigitEncoder:
    """The MNIST backbone's prompts: one-hot digit rows, zero rows for "" (the class vector dropped with p_uncond in
    training)."""

    name = "mnist"

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)

    def embed(self, prompts: list[str]) -> torch.Tensor:
        rows = torch.zeros(len(prompts), len(DIGIT_WORDS), device=self.device)
        for i, prompt in enumerate(prompts):
            digit = parse_prompt(prompt)
            if digit is not None:
                rows[i, digit] = 1.0
        return rows


def get_encoder(name: str, params: dict, *, allow_cpu: bool = False) -> Encoder:
    """The text encoder of backbone `name` from validated params (device; part_a.deepfloyd for IF)."""
    from difflab.pipeline.runtime import resolve_device

    if name == "mnist":
        return DigitEncoder(resolve_device(params["device"]))
    if name == "deepfloyd":
        from difflab.backbones.deepfloyd import from_params

        return from_params(params, allow_cpu=allow_cpu)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
