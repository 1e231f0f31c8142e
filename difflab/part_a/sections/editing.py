"""A.1.7.x: image-to-image translation of the test, web, drawn and user images: SDEdit with the generic prompt
(mean PSNR to the inputs per i_start in `sdedit_psnr`), inpainting, and SDEdit guided by other prompts."""
from __future__ import annotations

from typing import Sequence

import torch

from difflab.part_a import loops as pa
from difflab.part_a.inputs import EditImage
from difflab.part_a.sections.context import PartA


def run(a: PartA) -> None:
    a.metrics["sdedit_psnr"] = sdedit_figure(a, "1_7_sdedit.png", "A.1.7", a.images.test,
                                             "SDEdit of the test images", "A.1.7 sdedit")
    web_and_drawn = [a.images.web, *a.images.drawn, *a.images.user]
    sdedit_figure(a, "1_7_1_sdedit_web_drawn.png", "A.1.7.1", web_and_drawn, "SDEdit of web and drawn images",
                  "A.1.7.1 web and drawn")
    inpainting(a)
    text_sdedit(a)


def sdedit_figure(a: PartA, file: str, section: str, edits: Sequence[EditImage], title: str,
                  seed: str) -> dict[str, float]:
    """A.1.7 / A.1.7.1 with the generic prompt; returns the mean PSNR to the inputs per i_start."""
    rows, distances = _sdedit_rows(a, edits, a.guided_noise([a.cfg.prompts.sdedit] * len(edits)), seed)
    a.figure(file, section, title,
             f"Noised to strided index i_start and denoised with CFG and the generic prompt "
             f"{a.cfg.prompts.sdedit!r}: the smaller i_start, the more noise and the bigger the edit (a "
             "new image at i_start = 0, nearly the input at the largest). PSNR to the input per i_start is in "
             "the metrics.", rows, [e.name for e in edits], _i_start_labels(a))
    return distances


def inpainting(a: PartA) -> None:
    """A.1.7.2: every test and user image that has a mask."""
    edits = [e for e in [*a.images.test, *a.images.user] if e.mask is not None]
    x0 = a.encode(edits)
    mask = torch.stack([e.mask for e in edits]).to(a.b.device)
    result = pa.inpaint(a.b, x0, mask, a.ts, a.guided_noise([a.cfg.prompts.sdedit] * len(edits)),
                        a.gen("A.1.7.2 inpainting"))
    rows = [[a.first(x0[k:]), mask[k].expand_as(x0[k]).float().cpu(), (a.b.decode(x0[k]) * mask[k]).cpu(),
             a.first(result[k:])] for k in range(len(edits))]
    a.figure("1_7_2_inpaint.png", "A.1.7.2", "Inpainting",
             "The masked region is generated from noise with CFG and the generic prompt "
             f"{a.cfg.prompts.sdedit!r}; after every step the rest is reset to the original noised to the "
             "current t: x_t <- m x_t + (1 - m) forward(x_orig, t).", rows,
             [e.name for e in edits], ["original", "mask", "to replace", "inpainted"])


def text_sdedit(a: PartA) -> None:
    """A.1.7.3: each test image edited toward its prompt of `edits`."""
    pairs = list(zip(a.images.test, a.cfg.prompts.edits))
    rows, _ = _sdedit_rows(a, [e for e, _ in pairs], a.guided_noise([p for _, p in pairs]), "A.1.7.3 text sdedit")
    a.figure("1_7_3_text_sdedit.png", "A.1.7.3", "Text-conditional image-to-image translation",
             "SDEdit guided by another prompt: low i_start follows the prompt, high i_start keeps the image.",
             rows, [f"{e.name}\n-> {p}" for e, p in pairs], _i_start_labels(a))


def _sdedit_rows(a: PartA, edits: Sequence[EditImage], noise_fn: pa.NoiseFn,
                 seed: str) -> tuple[list[list[torch.Tensor]], dict[str, float]]:
    """Figure rows (per image: each i_start, then the original) and the mean PSNR to the originals per i_start."""
    x0 = a.encode(edits)
    gen = a.gen(seed)
    results = {i: pa.sdedit(a.b, x0, a.ts, i, noise_fn, gen) for i in a.cfg.sdedit_i_starts}
    rows = [[a.first(r[k:]) for r in results.values()] + [a.first(x0[k:])] for k in range(len(edits))]
    return rows, {f"i{i}": a.psnr(r, x0) for i, r in results.items()}


def _i_start_labels(a: PartA) -> list[str]:
    return [f"i_start = {i}" for i in a.cfg.sdedit_i_starts] + ["original"]
