"""A.0, A.1.5 and A.1.6: images from pure noise, from the sample prompts with CFG (A.0), and from the photo
prompt without (A.1.5) and with (A.1.6) classifier-free guidance."""
from __future__ import annotations

import torch

from difflab.part_a import loops as pa
from difflab.part_a.sections.context import PartA


def from_prompts(a: PartA) -> None:
    """A.0: the sample prompts with CFG, one row per num_inference_steps."""
    prompts = list(a.cfg.prompts.samples)
    rows = []
    for k, steps in enumerate(a.cfg.inference_steps):
        ts = pa.inference_timesteps(a.b.num_train_timesteps, steps)
        x = pa.sample(a.b, len(prompts), ts, a.guided_noise(prompts), a.gen("A.0 samples", k), to_clean=True,
                      clean=a.b.threshold if a.cfg.thresholding else None)
        rows.append(list(a.upsampled(x, prompts, "A.0 samples", k)))
    a.figure("0_samples.png", "A.0", "Samples from the prompts",
             f"Classifier-free guidance at scale {a.cfg.cfg_scale} over evenly spaced timesteps; one row "
             "per num_inference_steps.", rows, [f"{s} steps" for s in a.cfg.inference_steps], prompts)


def without_guidance(a: PartA) -> None:
    """A.1.5."""
    n = a.cfg.n_samples
    a.figure("1_5_samples.png", "A.1.5", "Diffusion model sampling",
             f"{n} samples from pure noise (i_start = 0) with {a.cfg.prompts.photo!r}, without guidance.",
             _photo_samples(a, a.photo(n), "A.1.5 sampling"))


def with_guidance(a: PartA) -> None:
    """A.1.6."""
    n = a.cfg.n_samples
    a.figure("1_6_cfg.png", "A.1.6", "Classifier-free guidance",
             f"{n} samples with CFG scale {a.cfg.cfg_scale}: eps = eps_u + scale (eps_c - eps_u), "
             f"prompt {a.cfg.prompts.photo!r}, unconditional prompt ''.",
             _photo_samples(a, a.guided_noise([a.cfg.prompts.photo] * n), "A.1.6 cfg"))


def _photo_samples(a: PartA, noise_fn: pa.NoiseFn, section: str) -> list[list[torch.Tensor]]:
    """n_samples of the photo prompt on the strided schedule, as one figure row."""
    n = a.cfg.n_samples
    x = pa.sample(a.b, n, a.ts, noise_fn, a.gen(section))
    return [list(a.upsampled(x, [a.cfg.prompts.photo] * n, section))]
