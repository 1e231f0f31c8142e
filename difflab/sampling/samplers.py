"""Samplers for the Part B generative UNets: DDPM ancestral, DDIM, DPM-Solver++ (diffusers), flow Euler / Heun.

Classifier-free guidance runs conditional and unconditional rows in one batched forward:
eps = eps_u + gamma * (eps_c - eps_u), combined in fp32 whatever precision the UNet ran in.
Fewer steps than T use diffusers' "trailing" spacing: the first step is at t = T, as in the full chain.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from difflab.pipeline.params import DDPM_SAMPLERS, FLOW_SAMPLERS
from difflab.core.schedule import DDPMSchedule
from difflab.core.unet import NUM_CLASSES, UNet, one_hot

STOCHASTIC = ("ddpm", "dpmsolver_sde")


def guided(model: UNet, labels: torch.Tensor | None, gamma: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """f(x, t) -> fp32 model output; with labels, CFG at scale gamma from one forward over [cond; uncond]."""
    if labels is None:
        return lambda x, t: model(x, t).float()
    cond = one_hot(labels).to(next(model.parameters()).device)
    both = torch.cat([cond, torch.zeros_like(cond)])

    def f(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # in fp32: under bf16 autocast the outputs carry ~3 significant digits, and gamma scales their difference
        out_c, out_u = model(torch.cat([x, x]), torch.cat([t, t]), both).float().chunk(2)
        return out_u + gamma * (out_c - out_u)
    return f


def _noise(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=gen, device=gen.device).to(device)


def _frames(every: int, i: int, total: int) -> bool:
    return every > 0 and (i % every == 0 or i == total - 1)


@torch.inference_mode()
def sample_ddpm(model: UNet, schedule: DDPMSchedule, n: int, gen: torch.Generator, *,
                labels: torch.Tensor | None = None, gamma: float = 5.0, sampler: str = "ddpm",
                steps: int = 0, frame_every: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Draw n images from an eps-prediction UNet; returns (samples in [0, 1], intermediate x_t frames)."""
    device = next(model.parameters()).device
    f = guided(model, labels, gamma)
    x = _noise((n, 1, 28, 28), gen, device)
    frames: list[torch.Tensor] = []
    T = schedule.num_ts
    if sampler == "ddpm" and steps in (0, T):
        for i, t in enumerate(range(T, 0, -1)):
            tt = torch.full((n,), t, device=device)
            x = schedule.posterior_step(x, tt, f(x, tt / T), _noise(x.shape, gen, device))
            if _frames(frame_every, i, T):
                frames.append(x.clamp(0, 1).cpu())
        return x.clamp(0, 1).cpu(), frames
    timesteps = trailing_timesteps(T, steps or T)
    scheduler = None if sampler == "ddim" else diffusers_scheduler(sampler, schedule)
    if scheduler is not None:
        scheduler.set_timesteps(timesteps=timesteps, device=device)
    for i, td in enumerate(timesteps):
        # diffusers timestep td (0-based) is our t = td + 1
        tt = torch.full((n,), td + 1, device=device)
        eps = f(x, tt / T)
        if scheduler is None:
            # DDIM by hand: diffusers' DDIMScheduler.step goes to td - T // steps, which is not the next timestep of
            # the grid when steps does not divide T; step to the next one (our 0 = the clean image) instead
            t_prev = timesteps[i + 1] + 1 if i + 1 < len(timesteps) else 0
            x = schedule.ddim_step(x, tt, torch.full_like(tt, t_prev), eps)
        else:
            x = scheduler.step(eps, td, x, generator=gen if sampler in STOCHASTIC else None).prev_sample
        if _frames(frame_every, i, len(timesteps)):
            frames.append(x.clamp(0, 1).cpu())
    return x.clamp(0, 1).cpu(), frames


def trailing_timesteps(num_ts: int, steps: int) -> list[int]:
    """diffusers' "trailing" timesteps (0-based, the first T - 1) for `steps` steps: round(T - i T / steps) - 1.

    From the step index, because diffusers' np.arange(T, 0, -T / steps) gives steps + 1 values, the last -1, when
    T / steps rounds down (for T = 300: 7, 14, 28, 55, 56, 110, ... steps)."""
    if not 1 <= steps <= num_ts:
        raise ValueError(f"steps must be in [1, {num_ts}] (the training timesteps), got {steps}")
    return [int(v) - 1 for v in np.round(num_ts - np.arange(steps) * (num_ts / steps))]


def diffusers_scheduler(sampler: str, schedule: DDPMSchedule):
    """A diffusers scheduler with exactly our linear betas (no clipping or thresholding of x0); `sample_ddpm` gives
    it `trailing_timesteps`. DDIM has none: `DDPMSchedule.ddim_step` takes its steps."""
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

    betas = schedule.betas[1:].double().numpy()
    common = dict(num_train_timesteps=schedule.num_ts, trained_betas=betas, prediction_type="epsilon")
    if sampler == "ddpm":
        return DDPMScheduler(**common, clip_sample=False, variance_type="fixed_small")
    if sampler in ("dpmsolver", "dpmsolver_sde"):
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++" if sampler == "dpmsolver"
                                           else "sde-dpmsolver++", solver_order=2,
                                           timestep_spacing="trailing", final_sigmas_type="zero")
    raise ValueError(f"unknown DDPM sampler {sampler!r}; expected one of {DDPM_SAMPLERS}")


@torch.inference_mode()
def sample_flow(model: UNet, n: int, gen: torch.Generator, *, labels: torch.Tensor | None = None,
                gamma: float = 5.0, sampler: str = "euler", steps: int = 50,
                frame_every: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Integrate dx/dt = v(x, t) from noise (t = 0) to data (t = 1) with Euler or Heun (2nd-order) steps."""
    if sampler not in FLOW_SAMPLERS:
        raise ValueError(f"unknown flow sampler {sampler!r}; expected one of {FLOW_SAMPLERS}")
    device = next(model.parameters()).device
    f = guided(model, labels, gamma)
    x = _noise((n, 1, 28, 28), gen, device)
    frames: list[torch.Tensor] = []
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full((n,), i * dt, device=device)
        v = f(x, t)
        if sampler == "heun" and i < steps - 1:  # the last step stays Euler, as in EDM (Karras et al. 2022)
            x_next = x + dt * v
            v = 0.5 * (v + f(x_next, t + dt))
        x = x + dt * v
        if _frames(frame_every, i, steps):
            frames.append(x.clamp(0, 1).cpu())
    return x.clamp(0, 1).cpu(), frames


def digit_labels(per_class: int) -> torch.Tensor:
    """0,0,..,1,1,..,9: `per_class` of each digit, in grid order."""
    return torch.arange(NUM_CLASSES).repeat_interleave(per_class)


@dataclass(frozen=True)
class SamplerChoice:
    """Which sampler and how many steps for each model family (params.yaml `sample`)."""
    ddpm_sampler: str = "ddpm"
    ddpm_steps: int = 0          # 0 = all T steps
    flow_sampler: str = "euler"
    flow_steps: int = 50

    @classmethod
    def from_params(cls, sample: dict) -> "SamplerChoice":
        return cls(sample["ddpm_sampler"], sample["ddpm_steps"], sample["flow_sampler"], sample["flow_steps"])

    def steps(self, kind: str, num_ts: int = 300) -> int:
        return (self.ddpm_steps or num_ts) if kind.endswith("_ddpm") else self.flow_steps

    def frame_every(self, kind: str, num_ts: int = 300, frames: int = 30) -> int:
        """Record every k-th step so that a sampling GIF has about `frames` frames."""
        return max(1, self.steps(kind, num_ts) // frames)

    def describe(self, kind: str, num_ts: int = 300) -> str:
        """A caption fragment, e.g. 'DPM-Solver++ sampling, 30 steps'."""
        if kind.endswith("_ddpm"):
            name = {"ddpm": "DDPM ancestral", "ddim": "DDIM", "dpmsolver": "DPM-Solver++",
                    "dpmsolver_sde": "SDE-DPM-Solver++"}[self.ddpm_sampler]
            return f"{name} sampling, {self.steps(kind, num_ts)} steps"
        return f"{self.flow_sampler.capitalize()} integration of the flow, {self.flow_steps} steps"


def generate(model: UNet, kind: str, n: int, gen: torch.Generator, *, choice: SamplerChoice = SamplerChoice(),
             schedule: DDPMSchedule | None = None, labels: torch.Tensor | None = None, gamma: float = 5.0,
             frame_every: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Sample any generative kind with the sampler `choice` names for its family."""
    if kind.endswith("_ddpm"):
        if schedule is None:
            raise ValueError("DDPM sampling needs the training schedule")
        return sample_ddpm(model, schedule, n, gen, labels=labels, gamma=gamma, sampler=choice.ddpm_sampler,
                           steps=choice.ddpm_steps, frame_every=frame_every)
    return sample_flow(model, n, gen, labels=labels, gamma=gamma, sampler=choice.flow_sampler,
                       steps=choice.flow_steps, frame_every=frame_every)


def generate_in_batches(model: UNet, kind: str, n: int, gen: torch.Generator, batch_size: int,
                        precision: str = "auto", labels: torch.Tensor | None = None, **opts) -> torch.Tensor:
    """n images (one per label when labels are given), batch by batch, quantized to 8 bits like saved samples."""
    from difflab.pipeline.runtime import autocast

    device = next(model.parameters()).device
    out = []
    for i in range(0, n, batch_size):
        m = min(batch_size, n - i)
        with autocast(device, precision):
            out.append(generate(model, kind, m, gen, labels=None if labels is None else labels[i:i + m],
                                **opts)[0])
    return torch.cat(out).mul(255).round().div(255)
