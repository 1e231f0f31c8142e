"""Part A settings from params.yaml `part_a`, with the prompts of the chosen backbone."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prompts:
    """samples: A.0; photo: the prompt of A.1.3-1.6 ("a high quality photo"); sdedit: the generic prompt of A.1.7,
    1.7.1 and 1.7.2 (on MNIST the unconditional one, so an edit can become another digit); edits: A.1.7.3, one per
    test image; anagrams: (view, upright prompt, transformed prompt); hybrids: (low-pass, high-pass prompt);
    three_band: (low, middle, high frequency prompt)."""
    samples: tuple[str, ...]
    photo: str
    sdedit: str
    edits: tuple[str, ...]
    anagrams: tuple[tuple[str, str, str], ...]
    hybrids: tuple[tuple[str, str], ...]
    three_band: tuple[tuple[str, str, str], ...] = ()

    @classmethod
    def from_params(cls, params: dict) -> "Prompts":
        """The prompts of the chosen backbone: all that embed_prompts reads of `part_a`."""
        a = params["part_a"]
        p = a[a["backbone"]]["prompts"]
        return cls(tuple(p["samples"]), p["photo"], p["sdedit"], tuple(p["edits"]),
                   tuple(tuple(x) for x in p["anagrams"]), tuple(tuple(x) for x in p["hybrids"]),
                   tuple(tuple(x) for x in p["three_band"]))

    def all(self) -> list[str]:
        """Every prompt Part A embeds, "" (unconditional) first, without repeats."""
        found = ["", *self.samples, self.photo, self.sdedit, *self.edits, *(p for a in self.anagrams for p in a[1:]),
                 *(p for h in self.hybrids for p in h), *(p for h in self.three_band for p in h)]
        return list(dict.fromkeys(found))


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
