"""The Backbone interface that Part A's sampling loops are written against, and `get_backbone` to build one.

A backbone is a pretrained, prompt-conditioned eps-prediction diffusion model with a `NoiseSchedule`
(difflab.core.schedule: diffusers' timesteps t = 0..T-1, x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps).
Classifier-free guidance is not the backbone's job: the loops stack cond and uncond embeddings in one batch.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from difflab.core.schedule import NoiseSchedule

BACKBONES = ("mnist", "deepfloyd")


class Backbone(ABC):
    """What Part A needs from a model: its schedule, prompt embeddings, a noise estimate, and its pixel space."""

    name: str
    channels: int
    device: torch.device

    @property
    @abstractmethod
    def schedule(self) -> NoiseSchedule:
        """The noise schedule the model was trained with."""

    @property
    @abstractmethod
    def image_size(self) -> int:
        """Side of the square images `predict` works on."""

    @property
    def num_train_timesteps(self) -> int:
        return self.schedule.num_ts

    @abstractmethod
    def embed(self, prompts: list[str]) -> torch.Tensor:
        """One embedding row per prompt; "" is the unconditional embedding used for CFG."""

    @abstractmethod
    def predict(self, x_t: torch.Tensor, t: int, embeds: torch.Tensor,
                t_prev: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(eps, variance): the noise estimate for x_t at timestep t and, when t_prev is given, the variance of the
        ancestral step t -> t_prev, shaped like eps (None when t_prev is None)."""

    def encode(self, images01: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> the model's pixel space ([-1, 1] unless a backbone says otherwise)."""
        return images01 * 2 - 1

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """The model's pixel space -> [0, 1] images (clipped)."""
        return ((x + 1) / 2).clamp(0, 1)

    def threshold(self, x0: torch.Tensor) -> torch.Tensor:
        """The backbone's own post-processing of an x0 estimate in its pipeline (IF: dynamic thresholding); none by
        default. Part A applies it only where params ask (part_a.deepfloyd.thresholding, A.0)."""
        return x0

    def upsample(self, images01: torch.Tensor, embeds: torch.Tensor, uncond: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        """A super-resolved copy of generated images for display; backbones without a second stage return them as is."""
        return images01
