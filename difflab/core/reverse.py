"""The reverse process of a DDPM schedule: the steps that only sampling takes (Part B samplers, Part A loops).

Kept apart from difflab.core.schedule, which training imports, so that an edit to a step re-runs the sampling stages
and never the training ones. Timesteps follow the schedule's convention (t = 0..T-1, t = -1 the clean image).
The steps take the clean-image estimate x0 (and eps where they need it), computed from the model's output by
`predicted_x0` / `predicted_eps`, so that a v-model's first step on a zero-terminal-SNR schedule (abar = 0, where
x0 cannot come from eps) works.
"""
from __future__ import annotations

import torch

from difflab.core.schedule import NoiseSchedule, Timestep


def x0_from_eps(schedule: NoiseSchedule, x_t: torch.Tensor, t: Timestep, eps: torch.Tensor) -> torch.Tensor:
    """Invert the forward process with a noise estimate: x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t).
    Undefined where abar_t = 0 (the last timestep of a zero-terminal-SNR schedule): that raises."""
    abar = schedule.abar(t, x_t)
    if schedule.zero_terminal_snr and bool((abar == 0).any()):
        raise ValueError("x0 from a noise estimate at abar_t = 0 (the last timestep of a zero-terminal-SNR "
                         "schedule): x_t holds no image there; use a v-prediction model's x0 (`predicted_x0`)")
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()


def predicted_x0(schedule: NoiseSchedule, x_t: torch.Tensor, t: Timestep, out: torch.Tensor,
                 prediction: str = "eps") -> torch.Tensor:
    """The clean image a model's output implies: eps-model `x0_from_eps`; v-model sqrt(abar) x_t - sqrt(1 - abar) v
    (Salimans & Ho 2022), defined at abar = 0 too."""
    if prediction == "eps":
        return x0_from_eps(schedule, x_t, t, out)
    abar = _v_model_abar(schedule, x_t, t, prediction)
    return abar.sqrt() * x_t - (1 - abar).sqrt() * out


def predicted_eps(schedule: NoiseSchedule, x_t: torch.Tensor, t: Timestep, out: torch.Tensor,
                  prediction: str = "eps") -> torch.Tensor:
    """The noise a model's output implies: an eps-model's output itself; v-model sqrt(abar) v + sqrt(1 - abar) x_t."""
    if prediction == "eps":
        return out
    abar = _v_model_abar(schedule, x_t, t, prediction)
    return abar.sqrt() * out + (1 - abar).sqrt() * x_t


def _v_model_abar(schedule: NoiseSchedule, x_t: torch.Tensor, t: Timestep, prediction: str) -> torch.Tensor:
    if prediction != "v":
        raise ValueError(f"unknown prediction {prediction!r}; expected 'eps' or 'v'")
    return schedule.abar(t, x_t)


def posterior_variance(schedule: NoiseSchedule, t: Timestep, t_prev: Timestep, like: torch.Tensor) -> torch.Tensor:
    """beta_tilde of the step t -> t_prev: (1 - abar_prev) / (1 - abar_t) * beta, beta = 1 - abar_t / abar_prev
    (DDPM eq. 7, for any stride); 0 when t_prev = -1."""
    abar_t, abar_prev = schedule.abar(t, like), schedule.abar(t_prev, like)
    return (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)


def step_variance(schedule: NoiseSchedule, t: Timestep, t_prev: Timestep, like: torch.Tensor,
                  kind: str = "beta") -> torch.Tensor:
    """The noise variance of an ancestral step t -> t_prev: "beta", beta = 1 - abar_t / abar_prev (the spec's
    sigma^2 = beta_t, DDPM Alg. 2; diffusers' "fixed_large"), or "posterior", beta_tilde (its "fixed_small").
    0 on the step to the clean image (t_prev = -1): Alg. 2 adds no noise there."""
    if kind == "posterior":
        return posterior_variance(schedule, t, t_prev, like)
    if kind != "beta":
        raise ValueError(f"unknown DDPM variance {kind!r}; expected 'beta' or 'posterior'")
    beta = 1 - schedule.abar(t, like) / schedule.abar(t_prev, like)
    if isinstance(t_prev, int):
        return beta * (t_prev >= 0)
    return beta * (t_prev >= 0).to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def ancestral_step(schedule: NoiseSchedule, x_t: torch.Tensor, t: Timestep, t_prev: Timestep, x0: torch.Tensor,
                   noise: torch.Tensor, variance: torch.Tensor | None = None, clean=None) -> torch.Tensor:
    """One ancestral step t -> t_prev < t (A.3, DDPM Alg. 2 for any stride):
    x_prev = sqrt(abar_prev) beta / (1 - abar_t) x0 + sqrt(alpha)(1 - abar_prev) / (1 - abar_t) x_t + sqrt(v) z,
    alpha = abar_t / abar_prev, beta = 1 - alpha, x0 the model's estimate (passed through `clean`, e.g. IF's
    dynamic thresholding, when given); v is `variance` (a model's learned one) or the posterior variance
    beta_tilde."""
    abar, abar_prev = schedule.abar(t, x_t), schedule.abar(t_prev, x_t)
    alpha = abar / abar_prev
    beta = 1 - alpha
    if clean is not None:
        x0 = clean(x0)
    mean = abar_prev.sqrt() * beta / (1 - abar) * x0 + alpha.sqrt() * (1 - abar_prev) / (1 - abar) * x_t
    if variance is None:
        variance = posterior_variance(schedule, t, t_prev, x_t)
    return mean + variance.sqrt() * noise


def ddim_step(schedule: NoiseSchedule, t_prev: Timestep, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM step to t_prev (Song et al. eq. 12, eta = 0) from the estimates x0 and eps at the current
    timestep: x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps; t_prev = -1 returns x0."""
    return schedule.forward(x0, t_prev, eps)
