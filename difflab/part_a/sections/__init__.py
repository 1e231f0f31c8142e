"""Every Part A deliverable in the course's order: figures, `manifest.json` (what the report renders) and metrics.

The same code runs on every backbone; only the images (part_a_inputs) and prompts (params) differ. A module per
group of the course's sections, each function one section writing one figure into `PartA` (context.py).
"""
from __future__ import annotations

import torch

from difflab.figures import manifest
from difflab.part_a.sections import denoising, editing, illusions, sampling
from difflab.part_a.sections.context import PartA


def run(a: PartA) -> dict:
    """Write every figure and manifest.json into a.out; return the metrics."""
    a.out.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        sampling.from_prompts(a)  # A.0
        denoising.run(a)  # A.1.1-1.4
        sampling.without_guidance(a)  # A.1.5
        sampling.with_guidance(a)  # A.1.6
        editing.run(a)  # A.1.7.x
        illusions.run(a)  # A.1.8-1.9
    manifest.write(a.out, a.figures)
    return a.metrics
