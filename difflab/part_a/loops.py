"""Part A's sampling loops, written once against `Backbone`: forward process, one-step and iterative denoising,
classifier-free guidance, SDEdit, inpainting, visual anagrams and hybrid images.

Timesteps follow diffusers (t = 0..T-1, the backbone's NoiseSchedule does the math); images are in the backbone's pixel
space (backbone.encode / decode convert from / to [0, 1]). A noise function maps (x_t, t, t_prev) to
(eps, variance); every guidance variant is one such function, so there is a single denoising loop.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from difflab.backbones.base import Backbone
from difflab.core.reverse import ancestral_step, x0_from_eps
from difflab.part_a.views import View
from difflab.pipeline.runtime import randn

NoiseFn = Callable[[torch.Tensor, int, int | None], tuple[torch.Tensor, torch.Tensor | None]]


# ---------------------------------------------------------------- timesteps

def strided_timesteps(num_train_timesteps: int, stride: int) -> list[int]:
    """Every stride-th timestep from the largest multiple of stride below T down to 0 (990, 960, ..., 0 for
    T = 1000, stride 30; 297, 288, ..., 0 for T = 300, stride 9: the same 34 steps)."""
    if not 1 <= stride < num_train_timesteps:
        raise ValueError(f"stride must be in [1, {num_train_timesteps - 1}], got {stride}")
    return list(range((num_train_timesteps - 1) // stride * stride, -1, -stride))


def stride_for(num_train_timesteps: int, stride_fraction: float) -> int:
    """The stride as a fraction of T (0.03: 30 of IF's 1000 steps, 9 of the MNIST DDPM's 300)."""
    return max(1, round(stride_fraction * num_train_timesteps))


def inference_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """`steps` evenly spaced timesteps with diffusers' "leading" spacing (IF's default): (steps-1)*r, ..., r, 0."""
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"num_inference_steps must be in [1, {num_train_timesteps}], got {steps}")
    ratio = num_train_timesteps // steps
    return [k * ratio for k in reversed(range(steps))]


def noise_timestep(num_train_timesteps: int, fraction: float) -> int:
    """A noise level given as a fraction of T (0.25 -> t = 250 of 1000, t = 75 of 300)."""
    return min(num_train_timesteps - 1, round(fraction * num_train_timesteps))


# ---------------------------------------------------------------- forward process and one-step denoising

def one_step_denoise(backbone: Backbone, x_t: torch.Tensor, t: int, noise_fn: NoiseFn) -> torch.Tensor:
    """The clean image in a single jump from t (A.1.3)."""
    eps, _ = noise_fn(x_t, t, None)
    return x0_from_eps(backbone.schedule, x_t, t, eps)


# ---------------------------------------------------------------- noise estimates

def conditional(backbone: Backbone, cond: torch.Tensor) -> NoiseFn:
    """The plain conditional estimate eps(x_t, t, cond); cond has one row per image."""
    return lambda x, t, t_prev: backbone.predict(x, t, cond, t_prev)


def cfg_noise(backbone: Backbone, cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> NoiseFn:
    """CFG (A.1.6): eps = eps_u + scale (eps_c - eps_u) from one batched forward over [cond; uncond].
    The variance is the conditional one, as in the course."""
    both = torch.cat([cond, uncond])

    def fn(x: torch.Tensor, t: int, t_prev: int | None):
        eps, var = backbone.predict(torch.cat([x, x]), t, both, t_prev)
        eps_c, eps_u = eps.chunk(2)
        return eps_u + scale * (eps_c - eps_u), None if var is None else var.chunk(2)[0]
    return fn


REDUCTIONS = ("mean", "sum")


def illusion(backbone: Backbone, views: Sequence[View], conds: Sequence[torch.Tensor], uncond: torch.Tensor,
             scale: float, reduction: str) -> NoiseFn:
    """eps = reduce_i inverse_view_i(eps_cfg(view_i(x_t), p_i)), every view in one batch; conds[i] and uncond have
    a row per image. The variance is the first view's (views like negate would flip the sign of a variance).

    "mean" makes visual anagrams (A.1.8): with views (identity, flip) the course's (eps_1 + flip(eps_2(flip(x_t))))
    / 2. "sum" makes factorized diffusion (Geng et al., 2024) with band views, whose projections sum to the
    identity: hybrids (A.1.9, lowpass(eps_1) + highpass(eps_2)) and three-band hybrids."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    k = len(views)
    fn = cfg_noise(backbone, torch.cat(list(conds)), torch.cat([uncond] * k), scale)

    def combined(x: torch.Tensor, t: int, t_prev: int | None):
        eps, var = fn(torch.cat([v.view(x) for v in views]), t, t_prev)
        eps = sum(v.inverse_view(e) for v, e in zip(views, eps.chunk(k)))
        if reduction == "mean":
            eps = eps / k
        return eps, None if var is None else var.chunk(k)[0]
    return combined


# ---------------------------------------------------------------- the denoising loop

@torch.inference_mode()
def iterative_denoise(backbone: Backbone, x_t: torch.Tensor, timesteps: Sequence[int], noise_fn: NoiseFn,
                      gen: torch.Generator, *, known: tuple[torch.Tensor, torch.Tensor] | None = None,
                      keep_every: int = 0, to_clean: bool = False,
                      clean: Callable[[torch.Tensor], torch.Tensor] | None = None,
                      ) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
    """Denoise x_t (at timesteps[0]) along the given timesteps down to timesteps[-1].

    known = (x_orig, mask) inpaints (A.1.7.2): after every step the region outside the mask is replaced by the
    original noised to the new timestep, x_t <- m x_t + (1 - m) forward(x_orig, t).
    to_clean adds diffusers' last step from timesteps[-1] to the clean image (abar = 1, no noise), as IFPipeline
    does; clean post-processes every x0 estimate (see `reverse.ancestral_step`).
    Returns the result and, every keep_every steps, (t, x_t) frames from before that step.
    """
    x, frames = x_t, []
    pairs = list(zip(timesteps[:-1], timesteps[1:])) + ([(timesteps[-1], -1)] if to_clean else [])
    for i, (t, t_prev) in enumerate(pairs):
        if keep_every and i % keep_every == 0:
            frames.append((t, x))
        if t_prev < 0:  # the final step draws no noise (diffusers draws none at t = 0)
            eps, _ = noise_fn(x, t, None)
            x0 = x0_from_eps(backbone.schedule, x, t, eps)
            x = ancestral_step(backbone.schedule, x, t, t_prev, x0, torch.zeros_like(x), torch.zeros_like(x), clean)
            continue
        eps, variance = noise_fn(x, t, t_prev)
        x0 = x0_from_eps(backbone.schedule, x, t, eps)
        x = ancestral_step(backbone.schedule, x, t, t_prev, x0, randn(x.shape, gen, x.device), variance, clean)
        if known is not None:
            x_orig, mask = known
            x = mask * x + (1 - mask) * backbone.schedule.forward(x_orig, t_prev, randn(x.shape, gen, x.device))
    return x, frames


def sample(backbone: Backbone, n: int, timesteps: Sequence[int], noise_fn: NoiseFn, gen: torch.Generator, *,
           to_clean: bool = False, clean: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Generate n images from pure noise at timesteps[0] (A.1.5: iterative denoising with i_start = 0)."""
    shape = (n, backbone.channels, backbone.image_size, backbone.image_size)
    return iterative_denoise(backbone, randn(shape, gen, backbone.device), timesteps, noise_fn, gen,
                             to_clean=to_clean, clean=clean)[0]


def sdedit(backbone: Backbone, x_orig: torch.Tensor, timesteps: Sequence[int], i_start: int, noise_fn: NoiseFn,
           gen: torch.Generator) -> torch.Tensor:
    """SDEdit (A.1.7): noise the image to timesteps[i_start] and denoise it back; small i_start = big edits."""
    if not 0 <= i_start < len(timesteps) - 1:
        raise ValueError(f"i_start must be in [0, {len(timesteps) - 2}] for {len(timesteps)} timesteps, got {i_start}")
    x_t = backbone.schedule.forward(x_orig, timesteps[i_start], randn(x_orig.shape, gen, x_orig.device))
    return iterative_denoise(backbone, x_t, timesteps[i_start:], noise_fn, gen)[0]


def inpaint(backbone: Backbone, x_orig: torch.Tensor, mask: torch.Tensor, timesteps: Sequence[int],
            noise_fn: NoiseFn, gen: torch.Generator) -> torch.Tensor:
    """Regenerate the region where mask = 1 from pure noise, keeping the rest of x_orig (A.1.7.2)."""
    x_t = randn(x_orig.shape, gen, x_orig.device)
    return iterative_denoise(backbone, x_t, timesteps, noise_fn, gen, known=(x_orig, mask))[0]
