"""A trained UNet made fast for inference: BatchNorm folded into the convolutions, channels-last memory.

Only the stages that run models import this (sampling, evaluation, Part A), never training, so an edit here re-runs
no `train@`.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from difflab.core.unet import UNet
from difflab.core.weights import load_model


@torch.no_grad()
def fold_batchnorm(model: UNet) -> UNet:
    """Fold every eval-mode BatchNorm into the conv before it and use channels_last: the same function, ~1.2-2x
    faster to sample on CPU. In place; the model can no longer be trained."""
    model.eval()
    for block in model.modules():
        if isinstance(block, nn.Sequential) and len(block) == 3 and isinstance(block[1], nn.BatchNorm2d):
            conv = block[0]
            block[0] = fuse_conv_bn_eval(conv, block[1], transpose=isinstance(conv, nn.ConvTranspose2d))
            block[1] = nn.Identity()
    return model.to(memory_format=torch.channels_last)


def load_for_inference(path: str | Path, device: torch.device | str = "cpu") -> tuple[UNet, str]:
    """`load_model` with BatchNorm folded (`fold_batchnorm`): what samplers and evaluations run; (model, kind)."""
    model, kind = load_model(path, device)
    return fold_batchnorm(model), kind
