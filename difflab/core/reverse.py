"""The reverse process of a DDPM schedule: the steps that only sampling takes (Part B samplers, Part A loops).

Kept apart from difflab.core.schedule, which training imports, so that an edit to a step re-runs the sampling stages
and never the training ones. Timesteps follow the schedule's convention (t = 0..T-1, t = -1 the clean image).
"""
from __future__ import annotations

import torch

from difflab.core.schedule import NoiseSchedule, Timestep


def x0_from_eps(schedule: NoiseSchedule, x_t: torch.Tensor, t: Timestep, eps: torch.Tensor) -> torch.Tensor:
    """Invert the forward process with a noise estimate: x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
    abar = schedule.abar(t, x_t)
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()


def posterior_variance(schedule: NoiseSchedule, t: Timestep, t_prev: Timestep, like: torch.Tensor) -> torch.Tensor:
    """beta_tilde of the step t -> t_prev: (1 - abar_prev) / (1 - abar_t) * beta, beta = 1 - abar_t / abar_prev
    (DDPM eq. 7, for any stride); 0 when t_prev = -1."""
    abar_t, abar_prev = schedule.abar(t, like), schedule.abar(t_prev, like)
    return (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)


def ancestral_step(schedule: NoiseSchedule, x_t: torch.Tensor, t: Timestep, t_prev: Timestep, eps: torch.Tensor,
                   noise: torch.Tensor, variance: torch.Tensor | None = None, clean=None) -> torch.Tensor:
    """One ancestral step t -> t_prev < t (A.3, DDPM Alg. 2 for any stride):
    x_prev = sqrt(abar_prev) beta / (1 - abar_t) x0 + sqrt(alpha)(1 - abar_prev) / (1 - abar_t) x_t + sqrt(v) z,
    alpha = abar_t / abar_prev, beta = 1 - alpha, x0 from eps (passed through `clean`, e.g. IF's dynamic
    thresholding, when given); v is `variance` (a model's learned one) or the posterior variance beta_tilde."""
    abar, abar_prev = schedule.abar(t, x_t), schedule.abar(t_prev, x_t)
    alpha = abar / abar_prev
    beta = 1 - alpha
    x0 = x0_from_eps(schedule, x_t, t, eps)
    if clean is not None:
        x0 = clean(x0)
    mean = abar_prev.sqrt() * beta / (1 - abar) * x0 + alpha.sqrt() * (1 - abar_prev) / (1 - abar) * x_t
    if variance is None:
        variance = posterior_variance(schedule, t, t_prev, x_t)
    return mean + variance.sqrt() * noise


def ddim_step(schedule: NoiseSchedule, x_t: torch.Tensor, t: Timestep, t_prev: Timestep,
              eps: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM step t -> t_prev < t (Song et al. eq. 12, eta = 0):
    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) eps; t_prev = -1 returns x0_hat."""
    return schedule.forward(x0_from_eps(schedule, x_t, t, eps), t_prev, eps)
