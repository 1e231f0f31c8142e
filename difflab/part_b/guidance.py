"""Classifier-free guidance sweeps: sample a class-conditioned model at several CFG scales and score each."""
from __future__ import annotations

import torch
from torch import nn

from difflab.evaluation.metrics import Reference, sample_scores
from difflab.pipeline.runtime import generator
from difflab.sampling.samplers import generate_in_batches
from difflab.core.unet import UNet


def sweep(model: UNet, kind: str, gammas: list[float], n: int, seed: int, classifier: nn.Module, ref: Reference,
          batch_size: int, precision: str = "auto", **opts) -> list[dict]:
    """Rows {gamma, fid, accuracy} for n samples (digits cycling 0-9) per scale; every scale starts from the same
    noise (generator seeded with `seed`), so rows differ only by gamma."""
    labels = torch.arange(n) % 10
    device = next(model.parameters()).device
    rows = []
    for gamma in gammas:
        images = generate_in_batches(model, kind, n, generator(device, seed), batch_size, precision, labels,
                                     gamma=gamma, **opts)
        scores = sample_scores(classifier, images, ref, labels)
        rows.append({"gamma": gamma, "fid": scores["fid"], "accuracy": scores["accuracy"]})
    return rows
