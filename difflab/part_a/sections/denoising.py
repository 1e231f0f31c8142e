"""A.1.1-1.4: the forward process of a test image, then classical (Gaussian blur), one-step and iterative denoising
of its x_t, each with its PSNR to the original per noise level (`denoise_psnr`)."""
from __future__ import annotations

import torch

from difflab.part_a import loops as pa
from difflab.part_a.filters import lowpass
from difflab.part_a.sections.context import PartA
from difflab.pipeline.params import ParamsError
from difflab.pipeline.runtime import randn

Noisy = dict[int, torch.Tensor]  # t -> x_t


def run(a: PartA) -> None:
    """The four sections on one x0 and its x_t."""
    x0, noisy = forward_process(a)
    a.metrics["denoise_psnr"] = {f"t{t}": {} for t in noisy}
    blur(a, x0, noisy)
    one_step(a, x0, noisy)
    iterative(a, x0, noisy)


def forward_process(a: PartA) -> tuple[torch.Tensor, Noisy]:
    """The first test image x0 (the course's Campanile) and its x_t at each noise level t, shared by the
    denoising sections, which denoise with the `photo` prompt that names its digit."""
    x0 = a.encode(a.images.test[:1])
    gen = a.gen("A.1.1 forward")
    noisy = {}
    for f in a.cfg.noise_fractions:
        t = pa.noise_timestep(a.b.num_train_timesteps, f)
        noisy[t] = a.b.schedule.forward(x0, t, randn(x0.shape, gen, a.b.device))
    levels = ", ".join(f"{f:g}" for f in a.cfg.noise_fractions)
    a.figure("1_1_forward.png", "A.1.1", "Forward process",
             f"x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps at {levels} of T = {a.b.num_train_timesteps}.",
             [[a.first(x0)] + [a.first(x_t) for x_t in noisy.values()]],
             col_labels=["original"] + [f"t = {t}" for t in noisy])
    return x0, noisy


def blur(a: PartA, x0: torch.Tensor, noisy: Noisy) -> None:
    blurred = {t: lowpass(x_t, *a.blur) for t, x_t in noisy.items()}
    for t, estimate in blurred.items():
        a.metrics["denoise_psnr"][f"t{t}"]["blur"] = a.psnr(estimate, x0)
    k, s = a.blur
    a.figure("1_2_blur.png", "A.1.2", "Classical denoising with a Gaussian blur",
             f"Gaussian blur, kernel {k}, sigma {s:.3g} (kernel {a.cfg.blur[0]}, sigma {a.cfg.blur[1]} "
             f"at 64 px, scaled to {a.b.image_size} px).",
             [[a.first(x_t) for x_t in noisy.values()], [a.first(b) for b in blurred.values()]],
             ["noisy", "blurred"], [f"t = {t}" for t in noisy])


def one_step(a: PartA, x0: torch.Tensor, noisy: Noisy) -> None:
    rows = []
    for t, x_t in noisy.items():
        estimate = pa.one_step_denoise(a.b, x_t, t, a.photo(len(x_t)))
        a.metrics["denoise_psnr"][f"t{t}"]["one_step"] = a.psnr(estimate, x0)
        rows.append([a.first(x0), a.first(x_t), a.first(estimate)])
    a.figure("1_3_one_step.png", "A.1.3", "One-step denoising",
             "x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) with eps from the prompt "
             f"{a.cfg.prompts.photo!r}.", rows, [f"t = {t}" for t in noisy],
             ["original", "noisy", "one-step estimate"])


def iterative(a: PartA, x0: torch.Tensor, noisy: Noisy) -> None:
    """Each x_t denoised down the strided schedule (PSNRs), and the figure's run from i_start."""
    for t, x_t in noisy.items():
        ts = [t] + [s for s in a.ts if s < t]
        clean, _ = pa.iterative_denoise(a.b, x_t, ts, a.photo(len(x_t)), a.gen("A.1.4 iterative"))
        a.metrics["denoise_psnr"][f"t{t}"]["iterative"] = a.psnr(clean, x0)
    i_start, every = a.cfg.i_start, a.cfg.show_every
    if not 0 <= i_start < len(a.ts) - 1:
        raise ParamsError(f"part_a.i_start must be below {len(a.ts) - 1} for this backbone, got {i_start}; "
                          "lower it in params.yaml")
    t, gen, x0 = a.ts[i_start], a.gen("A.1.4 shown"), x0[:1]
    x_t = a.b.schedule.forward(x0, t, randn(x0.shape, gen, a.b.device))
    clean, frames = pa.iterative_denoise(a.b, x_t, a.ts[i_start:], a.photo(1), gen, keep_every=every)
    one_step = pa.one_step_denoise(a.b, x_t, t, a.photo(1))
    row = [a.first(f) for _, f in frames] + [a.first(r) for r in (clean, one_step, lowpass(x_t, *a.blur), x0)]
    a.figure("1_4_iterative.png", "A.1.4", "Iterative denoising",
             f"Strided DDPM steps (every {a.stride} of {a.b.num_train_timesteps} timesteps) from "
             f"i_start = {i_start} (t = {t}) with {a.cfg.prompts.photo!r}; every {every}th step shown, then "
             "the result beside one-step denoising, the Gaussian blur and the original.", [row],
             col_labels=[f"t = {s}" for s, _ in frames] + ["iterative", "one-step", "blur", "original"])
