"""Samplers for the Part B generative UNets: DDPM ancestral (sigma^2 = beta_t, the spec's, or the posterior's
beta_tilde_t), DDIM, DPM-Solver++ (diffusers), flow Euler / Heun.

Classifier-free guidance runs conditional and unconditional rows in one batched forward:
eps = eps_u + gamma * (eps_c - eps_u), combined in fp32 whatever precision the UNet ran in. With a guidance interval
[lo, hi] (Kynkaanniemi et al. 2024) only the steps whose noise level s lies in it are guided; the others, like every
step at gamma = 1, run the conditional rows alone. s = 1 is pure noise and 0 clean: s = (t + 1) / T for a DDPM step
at timestep t, s = 1 - t for a flow step at time t (a step is guided by the level it starts from).
A DDPM UNet predicts eps or v (its `prediction`, recorded in its model file); the steps take the x0 and eps it implies.
Fewer steps than T use diffusers' "trailing" spacing: the first step is at t = T - 1, as in the full chain.
`generate` samples any generative family (difflab.core.families) with the sampler a `SamplerChoice` names for it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from difflab.core.families import DDPM, Family, FlowMatching, make_family
from difflab.core.reverse import ancestral_step, ddim_step, predicted_eps, predicted_x0, step_variance
from difflab.core.schedule import NoiseSchedule
from difflab.core.unet import NUM_CLASSES, UNet, one_hot
from difflab.pipeline.params import DDPM_SAMPLERS, FLOW_SAMPLERS, PREDICTIONS, model_kind
from difflab.pipeline.runtime import randn
from difflab.sampling.choice import SamplerChoice

Interval = Sequence[float] | None  # [lo, hi] noise levels of guided steps; None = every step


def with_cfg(model: UNet, labels: torch.Tensor | None,
             gamma: float) -> Callable[..., torch.Tensor]:
    """f(x, t, guided=True) -> fp32 model output; with labels, CFG at scale gamma from one forward over
    [cond; uncond] when `guided` and gamma != 1, else the conditional rows alone (n rows, not 2n)."""
    if labels is None:
        return lambda x, t, guided=True: model(x, t).float()
    cond = one_hot(labels).to(next(model.parameters()).device)
    both = torch.cat([cond, torch.zeros_like(cond)])

    def f(x: torch.Tensor, t: torch.Tensor, guided: bool = True) -> torch.Tensor:
        if not guided or gamma == 1:
            return model(x, t, cond).float()
        # in fp32: under bf16 autocast the outputs carry ~3 significant digits, and gamma scales their difference
        out_c, out_u = model(torch.cat([x, x]), torch.cat([t, t]), both).float().chunk(2)
        return out_u + gamma * (out_c - out_u)
    return f


def guided_at(noise_level: float, interval: Interval) -> bool:
    """Whether a step at noise level s (1 = pure noise, 0 = clean) uses CFG: always without an interval, else
    lo <= s <= hi."""
    return interval is None or interval[0] <= noise_level <= interval[1]


def _frames(every: int, i: int, total: int) -> bool:
    return every > 0 and (i % every == 0 or i == total - 1)


@torch.inference_mode()
def sample_ddpm(model: UNet, ddpm: DDPM, n: int, gen: torch.Generator, *, labels: torch.Tensor | None = None,
                gamma: float = 5.0, guidance_interval: Interval = None, sampler: str = "ddpm", steps: int = 0,
                variance: str = "beta", frame_every: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Draw n images from an eps- or v-prediction UNet (its `prediction`; eps for a module without one) on
    ddpm's schedule; the ancestral sampler adds noise of `variance` (`reverse.step_variance`: beta, the spec's, or
    posterior); returns (samples in [0, 1], intermediate x_t frames)."""
    device = next(model.parameters()).device
    f = with_cfg(model, labels, gamma)
    prediction = getattr(model, "prediction", "eps")
    schedule, T = ddpm.schedule, ddpm.schedule.num_ts
    x = randn((n, 1, 28, 28), gen, device)
    frames: list[torch.Tensor] = []
    timesteps = trailing_timesteps(T, steps or T)
    scheduler = None if sampler in ("ddpm", "ddim") else diffusers_scheduler(sampler, schedule, prediction)
    if scheduler is not None:
        scheduler.set_timesteps(timesteps=timesteps, device=device)
    for i, t in enumerate(timesteps):
        tt = torch.full((n,), t, device=device)
        out = f(x, ddpm.time_input(tt), guided_at((t + 1) / T, guidance_interval))
        t_prev = torch.full_like(tt, timesteps[i + 1] if i + 1 < len(timesteps) else -1)  # -1: the clean image
        if scheduler is not None:
            x = scheduler.step(out, t, x, generator=gen if sampler == "dpmsolver_sde" else None).prev_sample
        elif sampler == "ddim":
            # by hand: diffusers' DDIMScheduler.step goes to t - T // steps, which is not the next timestep of the
            # grid when steps does not divide T
            x = ddim_step(schedule, t_prev, predicted_x0(schedule, x, tt, out, prediction),
                          predicted_eps(schedule, x, tt, out, prediction))
        else:  # ancestral (B.5 on any stride): no noise on the last step, to the clean image
            x = ancestral_step(schedule, x, tt, t_prev, predicted_x0(schedule, x, tt, out, prediction),
                               randn(x.shape, gen, device), step_variance(schedule, tt, t_prev, x, variance))
        if _frames(frame_every, i, len(timesteps)):
            frames.append(x.clamp(0, 1).cpu())
    return x.clamp(0, 1).cpu(), frames


def trailing_timesteps(num_ts: int, steps: int) -> list[int]:
    """diffusers' "trailing" timesteps (the first T - 1) for `steps` steps: round(T - i T / steps) - 1.

    From the step index, because diffusers' np.arange(T, 0, -T / steps) gives steps + 1 values, the last -1, when
    T / steps rounds down (for T = 300: 7, 14, 28, 55, 56, 110, ... steps)."""
    if not 1 <= steps <= num_ts:
        raise ValueError(f"steps must be in [1, {num_ts}] (the training timesteps), got {steps}")
    return [int(v) - 1 for v in np.round(num_ts - np.arange(steps) * (num_ts / steps))]


def diffusers_scheduler(sampler: str, schedule: NoiseSchedule, prediction: str = "eps"):
    """A diffusers DPM-Solver++ scheduler with exactly our betas for an eps- or v-model; `sample_ddpm` gives it
    `trailing_timesteps`. The ancestral and DDIM samplers have none: `reverse.ancestral_step` and `reverse.ddim_step`
    take their steps (diffusers' DDPM step would add noise on a stride's last step, its DDIM step goes to
    t - T // steps).
    On a zero-terminal-SNR schedule it is told so (`rescale_betas_zero_snr`): our betas already end at abar = 0,
    which its rescaling keeps, and DPM-Solver then sets abar_{T-1} to 2^-24 so its first sigma is finite."""
    from diffusers import DPMSolverMultistepScheduler

    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")
    betas = schedule.betas.double().numpy()
    common = dict(num_train_timesteps=schedule.num_ts, trained_betas=betas,
                  prediction_type="epsilon" if prediction == "eps" else "v_prediction",
                  rescale_betas_zero_snr=schedule.zero_terminal_snr)
    if sampler in ("dpmsolver", "dpmsolver_sde"):
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++" if sampler == "dpmsolver"
                                           else "sde-dpmsolver++", solver_order=2,
                                           timestep_spacing="trailing", final_sigmas_type="zero")
    raise ValueError(f"unknown DDPM sampler {sampler!r}; expected one of {DDPM_SAMPLERS}")


@torch.inference_mode()
def sample_flow(model: UNet, n: int, gen: torch.Generator, *, labels: torch.Tensor | None = None,
                gamma: float = 5.0, guidance_interval: Interval = None, sampler: str = "euler", steps: int = 50,
                frame_every: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Integrate dx/dt = v(x, t) from noise (t = 0) to data (t = 1) with Euler or Heun (2nd-order) steps; a Heun
    step's two evaluations are both guided or both not, by the level it starts from."""
    if sampler not in FLOW_SAMPLERS:
        raise ValueError(f"unknown flow sampler {sampler!r}; expected one of {FLOW_SAMPLERS}")
    device = next(model.parameters()).device
    f = with_cfg(model, labels, gamma)
    x = randn((n, 1, 28, 28), gen, device)
    frames: list[torch.Tensor] = []
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full((n,), i * dt, device=device)
        guided = guided_at(1 - i * dt, guidance_interval)
        v = f(x, t, guided)
        if sampler == "heun" and i < steps - 1:  # the last step stays Euler, as in EDM (Karras et al. 2022)
            x_next = x + dt * v
            v = 0.5 * (v + f(x_next, t + dt, guided))
        x = x + dt * v
        if _frames(frame_every, i, steps):
            frames.append(x.clamp(0, 1).cpu())
    return x.clamp(0, 1).cpu(), frames


def digit_labels(per_class: int) -> torch.Tensor:
    """0,0,..,1,1,..,9: `per_class` of each digit, in grid order."""
    return torch.arange(NUM_CLASSES).repeat_interleave(per_class)


def sampling_family(params: dict, name: str) -> Family:
    """The family of `models.<name>` as its sampler needs it (a DDPM with its training schedule, `ddpm` params)."""
    return make_family(model_kind(params, name), NoiseSchedule.for_model(params, name))


def generate(model: UNet, family: Family, n: int, gen: torch.Generator, *, choice: SamplerChoice = SamplerChoice(),
             labels: torch.Tensor | None = None, gamma: float = 5.0, guidance_interval: Interval = None,
             frame_every: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Sample a generative family's UNet with the sampler `choice` names for that family; with labels, CFG at scale
    gamma at the noise levels in guidance_interval (params `sample.guidance_interval`; None = every step)."""
    guidance = dict(labels=labels, gamma=gamma, guidance_interval=guidance_interval)
    if isinstance(family, DDPM):
        return sample_ddpm(model, family, n, gen, **guidance, sampler=choice.ddpm_sampler, steps=choice.ddpm_steps,
                           variance=choice.ddpm_variance, frame_every=frame_every)
    if isinstance(family, FlowMatching):
        return sample_flow(model, n, gen, **guidance, sampler=choice.flow_sampler, steps=choice.flow_steps,
                           frame_every=frame_every)
    raise ValueError(f"{family.kind.name} is not a generative family; sample *_ddpm or *_fm models")


def generate_in_batches(model: UNet, family: Family, n: int, gen: torch.Generator, batch_size: int,
                        precision: str = "auto", labels: torch.Tensor | None = None, **opts) -> torch.Tensor:
    """n images (one per label when labels are given), batch by batch, quantized to 8 bits like saved samples."""
    from difflab.pipeline.runtime import autocast

    device = next(model.parameters()).device
    out = []
    for i in range(0, n, batch_size):
        m = min(batch_size, n - i)
        with autocast(device, precision):
            out.append(generate(model, family, m, gen, labels=None if labels is None else labels[i:i + m],
                                **opts)[0])
    return torch.cat(out).mul(255).round().div(255)
