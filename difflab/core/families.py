"""Training objectives for every Part B model kind, and the UNet each kind uses."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from difflab.pipeline.params import KINDS, T_SAMPLINGS
from difflab.core.schedule import DDPMSchedule, flow_interpolate
from difflab.core.unet import UNet, one_hot


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


def sample_flow_t(n: int, gen: torch.Generator, device: torch.device, sampling: str = "uniform",
                  logit_mean: float = 0.0, logit_std: float = 1.0) -> torch.Tensor:
    """Flow-matching times: U[0, 1] (the spec's), or logit-normal t = sigmoid(N(logit_mean, logit_std^2)) as in
    SD3 / minRF, which trains the middle of the path more often (here t = 1 is the data end, so logit_mean > 0
    leans toward clean images)."""
    if sampling == "uniform":
        return torch.rand(n, generator=gen, device=device)
    if sampling == "logit_normal":
        return torch.sigmoid(logit_mean + logit_std * torch.randn(n, generator=gen, device=device))
    raise ValueError(f"unknown t sampling {sampling!r}; expected one of {T_SAMPLINGS}")


def min_snr_weight(schedule: DDPMSchedule, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weight for epsilon-prediction (Hang et al. 2023): min(SNR_t, gamma) / SNR_t with
    SNR_t = abar_t / (1 - abar_t); it caps how much the nearly clean timesteps count."""
    abar = schedule.alphas_cumprod.to(t.device)[t].double()
    snr = abar / (1 - abar)
    return (snr.clamp(max=gamma) / snr).float()


def loss(kind: str, model: UNet, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, *,
         sigma: float = 0.5, p_uncond: float = 0.1, schedule: DDPMSchedule | None = None,
         t_sampling: str = "uniform", t_logit_mean: float = 0.0, t_logit_std: float = 1.0,
         min_snr_gamma: float = 0.0) -> torch.Tensor:
    """Mean-squared loss of one batch. Randomness comes only from `gen`, so a run is reproducible.
    Flow kinds draw t by `t_sampling` (`sample_flow_t`); DDPM kinds weight each image's loss by `min_snr_weight`
    when `min_snr_gamma` > 0. The defaults are the spec's objectives."""
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
        pred = model(schedule.forward(x, t, eps), t / schedule.num_ts, c)
        if min_snr_gamma > 0:
            per_image = (pred.float() - eps.float()).pow(2).flatten(1).mean(1)
            return (min_snr_weight(schedule, t, min_snr_gamma) * per_image).mean()
        return F.mse_loss(pred, eps)
    if kind.endswith("_fm"):  # x_t = (1-t) x0 + t x1, predict velocity x1 - x0; t ~ U[0, 1] in the spec
        t = sample_flow_t(n, gen, dev, t_sampling, t_logit_mean, t_logit_std)
        noise = randn_like(x)
        return F.mse_loss(model(flow_interpolate(noise, x, t), t, c), x - noise)
    raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")
