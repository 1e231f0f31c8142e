"""Training objectives for every Part B model kind, and the UNet each kind uses."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from difflab.schedule import DDPMSchedule, flow_interpolate
from difflab.unet import UNet, one_hot

KINDS = ("denoiser", "pure_noise", "time_ddpm", "class_ddpm", "time_fm", "class_fm")


def is_generative(kind: str) -> bool:
    return kind.endswith(("_ddpm", "_fm"))


def is_class_conditional(kind: str) -> bool:
    return kind.startswith("class_")


def build_model(kind: str, hidden: int) -> UNet:
    """The spec's UNet for a kind: unconditional denoisers; time-only DDPM adds (h + t), time-only flow multiplies
    (h * t); class-conditioned models of both families take c * h + t."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")
    conditioning = "class" if is_class_conditional(kind) else "time" if is_generative(kind) else "none"
    return UNet(hidden, conditioning, modulation="mul" if kind.endswith("_fm") else "add")


def loss(kind: str, model: UNet, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, *,
         sigma: float = 0.5, p_uncond: float = 0.1, schedule: DDPMSchedule | None = None) -> torch.Tensor:
    """Mean-squared loss of one batch. Randomness comes only from `gen`, so a run is reproducible."""
    n, dev = x.shape[0], x.device

    def randn_like(a: torch.Tensor) -> torch.Tensor:
        return torch.randn(a.shape, generator=gen, device=dev, dtype=a.dtype)

    if kind == "denoiser":  # z = x + sigma * eps, predict x  (B.2)
        return F.mse_loss(model(x + sigma * randn_like(x)), x)
    if kind == "pure_noise":  # z = eps, predict x: learns the mean image
        return F.mse_loss(model(randn_like(x)), x)
    c = None
    if is_class_conditional(kind):
        drop = torch.rand(n, generator=gen, device=dev) < p_uncond
        c = one_hot(y, drop)
    if kind.endswith("_ddpm"):  # x_t = sqrt(abar) x0 + sqrt(1-abar) eps, predict eps; t ~ U{1..T}
        assert schedule is not None, "DDPM objectives need a schedule"
        t = torch.randint(1, schedule.num_ts + 1, (n,), generator=gen, device=dev)
        eps = randn_like(x)
        return F.mse_loss(model(schedule.forward(x, t, eps), t / schedule.num_ts, c), eps)
    if kind.endswith("_fm"):  # x_t = (1-t) x0 + t x1, predict velocity x1 - x0; t ~ U[0, 1]
        t = torch.rand(n, generator=gen, device=dev)
        noise = randn_like(x)
        return F.mse_loss(model(flow_interpolate(noise, x, t), t, c), x - noise)
    raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")
