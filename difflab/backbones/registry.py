"""The backbone params name, built from validated params; Part A's entry point to the backbones.

Apart from base.py (which every backbone imports), so that importing the DeepFloyd backbone for its text encoder
(`embed_prompts`) does not pull in the MNIST backbone's denoising code.
"""
from __future__ import annotations

from difflab.backbones.base import BACKBONES, Backbone
from difflab.core.schedule import NoiseSchedule


def get_backbone(name: str, params: dict, *, allow_cpu: bool = False) -> Backbone:
    """The backbone `name` configured from validated params (ddpm, device, precision, part_a); models load lazily."""
    from difflab.pipeline import paths
    from difflab.pipeline.runtime import resolve_device

    device = resolve_device(params["device"])
    if name == "mnist":
        from difflab.backbones.mnist import MnistBackbone

        return MnistBackbone(paths.model_file("class_ddpm"), NoiseSchedule.linear(**params["ddpm"]), device,
                             params["precision"])
    if name == "deepfloyd":
        from difflab.backbones.deepfloyd import from_params

        return from_params(params, allow_cpu=allow_cpu)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
