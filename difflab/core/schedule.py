"""Noise schedules as pure tensor math: DDPM (spec eqs. B.3-B.5) and flow-matching interpolation."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DDPMSchedule:
    """Linear-beta DDPM schedule indexed t = 0..T, where t = 0 is the clean image.

    betas[t] for t >= 1 is linspace(beta1, beta2, T); alphas_cumprod[0] = 1 so that t = 0 is noise-free.
    Index t-1 of the length-T tail matches diffusers' `DDPMScheduler` timestep t-1.
    """

    betas: torch.Tensor
    alphas: torch.Tensor
    alphas_cumprod: torch.Tensor

    @property
    def num_ts(self) -> int:
        return len(self.betas) - 1

    @classmethod
    def linear(cls, num_ts: int = 300, beta1: float = 1e-4, beta2: float = 0.02) -> "DDPMSchedule":
        if num_ts < 1 or not 0 < beta1 <= beta2 < 1:
            raise ValueError(f"DDPM schedule needs num_ts >= 1 and 0 < beta1 <= beta2 < 1, got {num_ts}, {beta1}, {beta2}")
        betas = torch.cat([torch.zeros(1, dtype=torch.float64),
                           torch.linspace(beta1, beta2, num_ts, dtype=torch.float64)])
        alphas = 1.0 - betas
        return cls(betas.float(), alphas.float(), torch.cumprod(alphas, 0).float())

    def _gather(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def forward(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps  (spec eq. A.2 / B.4)."""
        abar = self._gather(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * eps

    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert the forward process given a noise estimate."""
        abar = self._gather(self.alphas_cumprod, t, x_t)
        return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    def posterior_step(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                       noise: torch.Tensor) -> torch.Tensor:
        """One ancestral step t -> t-1 (DDPM Alg. 2): posterior mean from x0_hat plus sqrt(beta_tilde) noise.

        mean = sqrt(abar_{t-1}) beta_t / (1-abar_t) x0 + sqrt(alpha_t)(1-abar_{t-1}) / (1-abar_t) x_t.
        No noise is added when t == 1 (beta_tilde_1 = 0 because abar_0 = 1).
        """
        x0 = self.x0_from_eps(x_t, t, eps)
        abar_t = self._gather(self.alphas_cumprod, t, x_t)
        abar_prev = self._gather(self.alphas_cumprod, t - 1, x_t)
        alpha_t = self._gather(self.alphas, t, x_t)
        beta_t = self._gather(self.betas, t, x_t)
        mean = (abar_prev.sqrt() * beta_t * x0 + alpha_t.sqrt() * (1 - abar_prev) * x_t) / (1 - abar_t)
        var = beta_t * (1 - abar_prev) / (1 - abar_t)
        return mean + var.sqrt() * noise

    def ddim_step(self, x_t: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Deterministic DDIM step t -> t_prev < t (Song et al. eq. 12, eta = 0):
        x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev) eps; t_prev = 0 returns x0_hat."""
        x0 = self.x0_from_eps(x_t, t, eps)
        abar_prev = self._gather(self.alphas_cumprod, t_prev, x_t)
        return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps


def flow_interpolate(x_noise: torch.Tensor, x_data: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Flow-matching path x_t = (1 - t) x0 + t x1 with x0 ~ N(0, I) and x1 data; velocity is x1 - x0."""
    t = t.to(x_data.dtype).view(-1, *([1] * (x_data.dim() - 1)))
    return (1 - t) * x_noise + t * x_data
