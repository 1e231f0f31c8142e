"""The Part B class-conditioned DDPM as a Part A backbone: prompts name digits, "" is the unconditional class."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch

from difflab.backbones.base import Backbone
from difflab.backbones.encoders import DigitEncoder
from difflab.core.families import DDPM
from difflab.core.inference import load_for_inference
from difflab.core.reverse import posterior_variance, predicted_eps
from difflab.core.schedule import NoiseSchedule
from difflab.core.unet import UNet
from difflab.pipeline.errors import CorruptFileError
from difflab.pipeline.runtime import autocast


class MnistBackbone(Backbone):
    """28x28 grayscale digits in [0, 1] (the model was trained on [0, 1] data, so encode/decode only clip)."""

    name = "mnist"
    channels = 1

    def __init__(self, model_path: str | Path, schedule: NoiseSchedule, device: torch.device,
                 precision: str = "auto"):
        self.model_path, self.device, self.precision = Path(model_path), device, precision
        self.family = DDPM("class_ddpm", schedule)

    @cached_property
    def model(self) -> UNet:
        model, kind = load_for_inference(self.model_path, self.device)
        if kind != "class_ddpm":
            raise CorruptFileError(f"{self.model_path} is a {kind!r} model; the MNIST backbone needs the class_ddpm "
                                   f"model: restore it with `dvc checkout {self.model_path}`")
        return model

    @property
    def schedule(self) -> NoiseSchedule:
        return self.family.schedule

    @property
    def image_size(self) -> int:
        return 28

    def embed(self, prompts: list[str]) -> torch.Tensor:
        return DigitEncoder(self.device).embed(prompts)

    def predict(self, x_t: torch.Tensor, t: int, embeds: torch.Tensor,
                t_prev: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The eps the loops expect; a v-model's output v becomes eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t."""
        tt = self.family.time_input(torch.full((len(x_t),), t, device=self.device))
        x_t = x_t.to(self.device)
        with torch.inference_mode(), autocast(self.device, self.precision):
            out = self.model(x_t, tt, embeds.to(self.device)).float()
        eps = predicted_eps(self.schedule, x_t, t, out, self.model.prediction)
        if t_prev is None:
            return eps, None
        return eps, posterior_variance(self.schedule, t, t_prev, eps).expand_as(eps)

    def encode(self, images01: torch.Tensor) -> torch.Tensor:
        return images01

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0, 1)
