"""The DDPM noise schedule as pure tensor math, in diffusers' timestep convention, for Part A and Part B alike.

Timesteps are t = 0..T-1 with abar_t = alphas_cumprod[t] (abar_0 < 1: t = 0 is already slightly noisy), and
t = -1 stands for the clean image (abar = 1), the target of a sampler's last step, as in diffusers' schedulers.
Every function takes t as a Python int (one timestep for the batch) or as a (N,) tensor (one per image).
Training imports this file; the reverse-process steps that only sampling takes are in difflab.core.reverse, so an edit
to a sampler step never invalidates training.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from difflab.pipeline.params import model_kind

Timestep = int | torch.Tensor


@dataclass(frozen=True)
class NoiseSchedule:
    """abar_t for t = 0..T-1 (alphas_cumprod, float32) and the betas that made it (what diffusers' schedulers take)."""

    alphas_cumprod: torch.Tensor
    betas: torch.Tensor

    @classmethod
    def linear(cls, num_ts: int = 300, beta1: float = 1e-4, beta2: float = 0.02,
               zero_terminal_snr: bool = False) -> "NoiseSchedule":
        """The course's schedule (B.3): betas = linspace(beta1, beta2, T), abar_t = prod_{s <= t} (1 - beta_s).

        zero_terminal_snr (Lin et al. 2024, Alg. 1): sqrt(abar) shifted and scaled so that abar_{T-1} = 0 (x_{T-1} is
        pure noise, as sampling assumes) and abar_0 is unchanged; betas follow from it (the last is 1)."""
        if num_ts < 2 or not 0 < beta1 <= beta2 < 1:
            raise ValueError(f"DDPM schedule needs num_ts >= 2 and 0 < beta1 <= beta2 < 1, got {num_ts}, {beta1}, "
                             f"{beta2}")
        betas = torch.linspace(beta1, beta2, num_ts, dtype=torch.float64)
        abar = torch.cumprod(1.0 - betas, 0)
        if not zero_terminal_snr:
            return cls(abar.float(), betas.float())
        root = abar.sqrt()
        root = (root - root[-1]) * (root[0] / (root[0] - root[-1]))
        return cls.from_alphas_cumprod(root.square())

    @property
    def zero_terminal_snr(self) -> bool:
        """abar_{T-1} = 0: the last timestep is pure noise (`linear(..., zero_terminal_snr=True)`)."""
        return bool(self.alphas_cumprod[-1] == 0)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: torch.Tensor) -> "NoiseSchedule":
        """A pretrained model's schedule (DeepFloyd IF's scheduler.alphas_cumprod)."""
        abar = alphas_cumprod.double().cpu()
        betas = 1 - abar / torch.cat([torch.ones(1, dtype=abar.dtype), abar[:-1]])
        return cls(abar.float(), betas.float())

    @classmethod
    def for_model(cls, params: dict, name: str) -> "NoiseSchedule | None":
        """The training schedule of `models.<name>`: params' `ddpm` section (with its optional zero_terminal_snr) for
        DDPM kinds, None for the others (whose stages do not declare `ddpm`, so must not read it)."""
        return cls.linear(**params["ddpm"]) if model_kind(params, name).family == "ddpm" else None

    @property
    def num_ts(self) -> int:
        return len(self.alphas_cumprod)

    @cached_property
    def _padded(self) -> torch.Tensor:
        """alphas_cumprod with a trailing 1, so index -1 is the clean image."""
        return torch.cat([self.alphas_cumprod, torch.ones(1)])

    def abar(self, t: Timestep, like: torch.Tensor) -> torch.Tensor:
        """abar_t on like's device and dtype (1 at t = -1): a scalar for an int t, (N, 1, .., 1) for a tensor t."""
        if isinstance(t, int):
            return self._padded[t].to(like.device)
        return self._padded.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def forward(self, x0: torch.Tensor, t: Timestep, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps  (A.2 / B.4)."""
        abar = self.abar(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def flow_interpolate(x_noise: torch.Tensor, x_data: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Flow-matching path x_t = (1 - t) x0 + t x1 with x0 ~ N(0, I) and x1 data; velocity is x1 - x0."""
    t = t.to(x_data.dtype).view(-1, *([1] * (x_data.dim() - 1)))
    return (1 - t) * x_noise + t * x_data
