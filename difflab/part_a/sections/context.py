"""What the Part A sections share: the backbone, prompt embeddings, config, inputs and judge; the strided schedule
and filters; a generator per section (SEEDS); the figures and metrics every section adds to."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from difflab.backbones.base import Backbone
from difflab.backbones.embeddings import lookup
from difflab.evaluation.metrics import psnr
from difflab.figures import manifest
from difflab.figures.plots import image_grid
from difflab.part_a import loops as pa
from difflab.part_a.config import PartAConfig
from difflab.part_a.filters import scaled_kernel
from difflab.part_a.inputs import EditImage, PartAImages
from difflab.part_a.judge import Judge
from difflab.pipeline.runtime import generator

# Each section draws its noise from its own generator, seeded part_a.seed + SEEDS[section] (+ k for the k-th row,
# pair, view or sigma of a section that loops), so changing one section never changes another's noise.
SEEDS = {
    "A.0 samples": 0,  # + k per num_inference_steps
    "A.1.1 forward": 10,
    "A.1.4 iterative": 20,  # the same seed again for each noise level
    "A.1.4 shown": 21,
    "A.1.5 sampling": 30,
    "A.1.6 cfg": 40,
    "A.1.7 sdedit": 70,
    "A.1.7.1 web and drawn": 71,
    "A.1.7.2 inpainting": 72,
    "A.1.7.3 text sdedit": 73,
    "A.1.8 anagrams": 80,  # + k per prompt pair
    "A.1.8 pair matrix": 85,  # + k per view
    "A.1.9 hybrids": 90,  # + k per prompt pair
    "A.1.9 sigma sweep": 95,  # + k per sigma
    "A.1.9 three band": 110,  # + k per prompt triple
}
UPSAMPLE = 100  # the second stage's generator: the section's seed (with its k) + 100


class PartA:
    """The state of one Part A run and the helpers its sections share."""

    def __init__(self, backbone: Backbone, embeddings: dict[str, torch.Tensor], cfg: PartAConfig,
                 images: PartAImages, out: str | Path, judge: Judge | None = None):
        self.b, self.table, self.cfg, self.images, self.judge = backbone, embeddings, cfg, images, judge
        self.out = Path(out)
        T = backbone.num_train_timesteps
        self.stride = pa.stride_for(T, cfg.stride_fraction)
        self.ts = pa.strided_timesteps(T, self.stride)
        self.blur = scaled_kernel(*cfg.blur, backbone.image_size)
        self.hybrid_filter = scaled_kernel(*cfg.hybrid_filter, backbone.image_size)  # A.1.9's sweep may replace it
        self.figures: list[manifest.Figure] = []
        self.metrics: dict = {"num_train_timesteps": T, "stride": self.stride}

    def emb(self, prompts: Sequence[str]) -> torch.Tensor:
        return lookup(self.table, prompts).to(self.b.device)

    def uncond(self, n: int) -> torch.Tensor:
        """The empty prompt's embedding, n rows."""
        return self.emb([""] * n)

    def gen(self, section: str, k: int = 0) -> torch.Generator:
        """The generator of SEEDS[section], the k-th of its range."""
        return generator(self.b.device, self.cfg.seed + SEEDS[section] + k)

    def encode(self, edits: Sequence[EditImage]) -> torch.Tensor:
        return self.b.encode(torch.stack([e.image for e in edits])).to(self.b.device)

    def first(self, x: torch.Tensor) -> torch.Tensor:
        """The first image of a batch in the model's space, as a displayable (C, H, W) tensor in [0, 1]."""
        return self.b.decode(x[0]).float().cpu()

    def photo(self, n: int) -> pa.NoiseFn:
        return pa.conditional(self.b, self.emb([self.cfg.prompts.photo] * n))

    def guided_noise(self, prompts: Sequence[str]) -> pa.NoiseFn:
        """CFG at cfg_scale, one prompt per image."""
        return pa.cfg_noise(self.b, self.emb(prompts), self.uncond(len(prompts)), self.cfg.cfg_scale)

    def upsampled(self, x: torch.Tensor, prompts: Sequence[str], section: str, k: int = 0) -> torch.Tensor:
        """Generated images in [0, 1], through the backbone's second stage when it has one."""
        return self.b.upsample(self.b.decode(x), self.emb(prompts), self.uncond(len(prompts)),
                               self.gen(section, UPSAMPLE + k)).cpu()

    def figure(self, file: str, section: str, title: str, caption: str, images: Sequence[Sequence[torch.Tensor]],
               row_labels: Sequence[str] = (), col_labels: Sequence[str] = ()) -> None:
        image_grid(self.out / file, images, row_labels=row_labels, col_labels=col_labels, title=title)
        self.figures.append(manifest.Figure(file, title, caption, section))

    def psnr(self, estimate: torch.Tensor, x0: torch.Tensor) -> float:
        """Mean PSNR (dB) over the batch, in [0, 1] image space."""
        return round(psnr(self.b.decode(estimate), self.b.decode(x0)).mean().item(), 3)
