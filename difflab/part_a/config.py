"""Part A settings from params.yaml `part_a`, with the prompts of the chosen backbone."""
from __future__ import annotations

from dataclasses import dataclass

from difflab.backbones.prompts import Prompts


@dataclass(frozen=True)
class PartAConfig:
    """Everything a Part A run reads from params; blur and hybrid_filter are (kernel, sigma) at 64 px; pair_views,
    pair_seeds, pair_steps: the all-digit-pairs anagram measurement; sweep_sigmas (at the backbone's size) and
    sweep_seeds: the hybrid cut-off sweep (both only where a classifier judges, MNIST); thresholding: A.0 applies the
    backbone's own x0 post-processing (IF's dynamic thresholding) as its pipeline does; three_band_sigmas: the
    (larger, smaller) Gaussian sigmas at 64 px that split a three-band hybrid."""
    seed: int
    cfg_scale: float
    noise_fractions: tuple[float, ...]
    stride_fraction: float
    i_start: int
    show_every: int
    inference_steps: tuple[int, ...]
    n_samples: int
    sdedit_i_starts: tuple[int, ...]
    blur: tuple[int, float]
    hybrid_filter: tuple[int, float]
    n_seeds: int
    prompts: Prompts
    pair_views: tuple[str, ...] = ()
    pair_seeds: int = 2
    pair_steps: int = 12
    sweep_sigmas: tuple[float, ...] = ()
    sweep_seeds: int = 8
    thresholding: bool = False
    three_band_sigmas: tuple[float, float] = (4.0, 1.0)

    @classmethod
    def from_params(cls, params: dict) -> "PartAConfig":
        """The part_a section of validated params, with the prompts of the chosen backbone."""
        a = params["part_a"]
        prompts = Prompts.from_params(params)
        pairs, sweep = a["pair_matrix"], a["hybrid_sweep"]
        return cls(a["seed"], float(a["cfg_scale"]), tuple(a["noise_fractions"]), a["stride_fraction"],
                   a["i_start"], a["show_every"], tuple(a["inference_steps"]), a["n_samples"],
                   tuple(a["sdedit_i_starts"]), (a["blur"]["kernel"], a["blur"]["sigma"]),
                   (a["hybrid_filter"]["kernel"], a["hybrid_filter"]["sigma"]), a["n_seeds"], prompts,
                   tuple(pairs["views"]), pairs["seeds"], pairs["steps"], tuple(float(s) for s in sweep["sigmas"]),
                   sweep["seeds"], a["backbone"] == "deepfloyd" and a["deepfloyd"]["thresholding"],
                   tuple(float(s) for s in a["three_band_sigmas"]))
