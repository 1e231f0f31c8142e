"""Numbers for what the pipeline makes: PSNR, and with the MNIST classifier the Fréchet distance of its features,
precision and recall in them (fidelity and coverage), legibility, intended-class accuracy and the classification
accuracy score. Each comes with a 95% bootstrap interval and beside its real-vs-real value on held-out digits at the
same sample size (difflab.pipeline.splits says which digits)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch
from torch import nn

from difflab.data.mnist import DataError, load_split
from difflab.evaluation.classifier import (
    ClassifierConfig,
    accuracy,
    features_and_logits,
    predict,
    train_classifier,
)
from difflab.pipeline.splits import HELD_OUT, TEST

Stats = tuple[np.ndarray, np.ndarray]


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error."""
    return (a.float() - b.float()).pow(2).flatten(1).mean(1)


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, peak]: 10 log10(peak^2 / MSE)."""
    return 10 * torch.log10(peak ** 2 / mse(a, b).clamp_min(1e-12))


def gaussian_stats(feats: torch.Tensor | np.ndarray) -> Stats:
    """Mean and covariance (float64) of N×D features."""
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need an N×D feature array with N >= 2, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(a: Stats, b: Stats, eps: float = 1e-6) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), as pytorch-fid computes it.

    A singular product (fewer samples than feature dimensions) makes the square root inaccurate, non-finite or
    clearly complex; then eps is added to both diagonals. Round-off leaves tiny imaginary parts, which are dropped."""
    (mu1, s1), (mu2, s2) = a, b
    with warnings.catch_warnings():
        warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
        try:
            covmean = scipy.linalg.sqrtm(s1 @ s2)
            ok = np.isfinite(covmean).all() and np.abs(np.imag(covmean)).max() <= 1e-3 * np.abs(covmean).max()
        except scipy.linalg.LinAlgWarning:
            ok = False
    if not ok:
        offset = np.eye(len(s1)) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(covmean)))


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> dict[str, float | None]:
    """Accuracy per intended class, keyed "0".."9"; None for a class with no samples."""
    hits = logits.argmax(1) == labels
    return {str(c): (hits[labels == c].float().mean().item() if (labels == c).any() else None)
            for c in range(num_classes)}


@dataclass(frozen=True)
class ClassGaussians:
    """Real images in a classifier's feature space as one Gaussian per class with one covariance shared by the
    classes, shrunk toward a scaled identity so that rare feature directions do not dominate (Lee et al. 2018).
    The Mahalanobis distance to a class then says whether an image looks like the real images of that class."""
    means: torch.Tensor      # C×D class means
    precision: torch.Tensor  # D×D inverse of the shrunk shared covariance

    @classmethod
    def fit(cls, feats: torch.Tensor, labels: torch.Tensor, num_classes: int,
            shrinkage: float = 0.1) -> "ClassGaussians":
        feats = feats.double()
        means = torch.stack([feats[labels == c].mean(0) for c in range(num_classes)])
        centered = feats - means[labels]
        cov = centered.T @ centered / len(feats)
        cov = (1 - shrinkage) * cov + shrinkage * cov.trace() / len(cov) * torch.eye(len(cov), dtype=cov.dtype)
        return cls(means, torch.linalg.inv(cov))

    def distances(self, feats: torch.Tensor) -> torch.Tensor:
        """(N, C) Mahalanobis distances of each feature row to every class mean."""
        d = feats.double()[:, None, :] - self.means[None]
        return torch.einsum("ncf,fg,ncg->nc", d, self.precision, d).clamp_min(0).sqrt()


@dataclass(frozen=True)
class Legibility:
    """When an image reads as a digit: the classifier gives one digit probability >= `confidence`, and the image's
    features are no farther from that digit's real features (ClassGaussians) than the `quantile` of real digits
    are from theirs. Confidence alone is not enough: the classifier also answers confidently about images unlike
    any digit (on uniform noise it is 98% sure)."""
    gaussians: ClassGaussians  # fitted on real images, by the class the classifier assigns them
    radius: float              # distance that `quantile` of the real images stay within
    confidence: float = 0.9

    @classmethod
    def fit(cls, feats: torch.Tensor, logits: torch.Tensor, confidence: float = 0.9,
            quantile: float = 0.99) -> "Legibility":
        """The rule for real images' features and logits (a class no real image is assigned to admits nothing)."""
        pred = logits.argmax(1)
        rule = cls(ClassGaussians.fit(feats, pred, logits.shape[1]), float("inf"), confidence)
        return replace(rule, radius=rule.distance(feats, pred).quantile(quantile).item())

    def distance(self, feats: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance of each feature row to the real images of its class."""
        return self.gaussians.distances(feats)[torch.arange(len(feats)), classes]

    def legible(self, feats: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Per image: does it read as a digit?"""
        p, pred = logits.softmax(1).max(1)
        return (p >= self.confidence) & (self.distance(feats, pred) <= self.radius)

    def score(self, feats: torch.Tensor, logits: torch.Tensor) -> float:
        """The fraction of images that read as a digit."""
        return self.legible(feats, logits).float().mean().item()


class FrechetTo:
    """Fréchet distances of many feature sets to one fixed Gaussian, as the bootstrap needs them. With R = S_r^(1/2)
    (symmetric), S_g S_r = (S_g R) R has the eigenvalues of R S_g R, so tr (S_g S_r)^(1/2) is the sum of the square
    roots of the eigenvalues of that symmetric matrix: one `eigvalsh` per set instead of a `sqrtm`."""

    def __init__(self, stats: Stats) -> None:
        self.mean, cov = stats
        w, v = np.linalg.eigh(cov)
        self.root = (v * np.sqrt(w.clip(0))) @ v.T
        self.trace = float(np.trace(cov))

    def __call__(self, feats: torch.Tensor | np.ndarray) -> float:
        mean, cov = gaussian_stats(feats)
        roots = np.sqrt(np.linalg.eigvalsh(self.root @ cov @ self.root).clip(0))
        diff = mean - self.mean
        return float(diff @ diff + np.trace(cov) + self.trace - 2 * roots.sum())


RESAMPLES = 200  # bootstrap replicates behind every interval


class Estimate(NamedTuple):
    """A number and its 95% bootstrap interval."""
    value: float
    lo: float
    hi: float

    def named(self, name: str) -> dict[str, float]:
        """Flat metrics keys `name`, `name_lo`, `name_hi` (flat numbers suit `dvc metrics diff` best)."""
        return {name: significant(self.value), f"{name}_lo": significant(self.lo), f"{name}_hi": significant(self.hi)}


def resamples(n: int) -> np.ndarray:
    """RESAMPLES rows of n indices drawn with replacement; the same rows for every set of n (seed 0), so outputs
    repeat byte for byte and all numbers of one sample set resample the same draws."""
    return np.random.default_rng(0).integers(0, n, (RESAMPLES, n))


def _interval(value: float, replicates: list[float] | np.ndarray) -> Estimate:
    lo, hi = np.percentile(replicates, [2.5, 97.5])
    return Estimate(float(value), float(lo), float(hi))


def share(hits: torch.Tensor) -> Estimate:
    """The share of True items, with the percentile interval of the share over resampled items."""
    h = hits.cpu().numpy().astype(np.float64)
    return _interval(h.mean(), h[resamples(len(h))].mean(1))


def fid_estimate(feats: torch.Tensor, frechet: FrechetTo) -> Estimate:
    """The Fréchet distance of the features to the reference, with the percentile interval over resampled rows
    moved down by their mean excess over the distance: a resampled set repeats rows, which raises its distance (by
    half the real-vs-real floor at n = 500), so the unmoved interval lies wholly above the estimate. On real digits
    the moved interval's width matches the spread over disjoint sets of n (README, "What a sample file holds")."""
    f = np.asarray(feats, dtype=np.float64)
    value, replicates = frechet(f), np.array([frechet(f[rows]) for rows in resamples(len(f))])
    return _interval(value, replicates - (replicates.mean() - value))


NEIGHBOURS = 3  # k of the k-nearest-neighbour manifolds (Kynkäänniemi et al. 2019)


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.cdist(a.double(), b.double(), compute_mode="donot_use_mm_for_euclid_dist")  # exact, repeatable


def knn_radii(feats: torch.Tensor, k: int = NEIGHBOURS) -> torch.Tensor:
    """Each row's distance to its k-th nearest other row."""
    d = _distances(feats, feats)
    d.fill_diagonal_(float("inf"))
    return d.kthvalue(k, dim=1).values


def in_manifold(points: torch.Tensor, centers: torch.Tensor, k: int = NEIGHBOURS) -> torch.Tensor:
    """Per point: does it lie within some center's k-NN ball (Kynkäänniemi et al. 2019)? The share over generated
    points against real centers is precision (fidelity); over real points against generated centers, recall
    (coverage)."""
    return (_distances(points, centers) <= knn_radii(centers, k)[None]).any(1)


CAS_STEPS, CAS_BATCH = 200, 64  # ~2 s on one CPU thread, testing included; 100 or 500 images get as many steps


def cas_hits(images01: torch.Tensor, labels: torch.Tensor, test: tuple[torch.Tensor, torch.Tensor],
             precision: str = "auto", device: torch.device | str = "cpu") -> torch.Tensor:
    """Classification accuracy score (Ravuri & Vinyals 2019), per test digit: is it read correctly by the scoring
    classifier's architecture trained only on `images01` with `labels`, for about CAS_STEPS optimizer steps (whole
    epochs), seed 0? A model whose samples miss digits or draw one digit for every label scores low."""
    epochs = -(-CAS_STEPS // -(-len(images01) // CAS_BATCH))
    cfg = ClassifierConfig(epochs=epochs, batch_size=CAS_BATCH, device=str(device), precision=precision)
    model = train_classifier(images01, labels, cfg)
    x, y = test
    return predict(model, x).argmax(1) == y


def spread(total: int, n: int) -> torch.Tensor:
    """n indices evenly spaced over range(total): a fixed subset that covers the whole split."""
    return torch.arange(n) * total // n


@dataclass(frozen=True)
class Reference:
    """What n generated digits are scored against: the digits of one split (`test` for the report, `validation` for
    choices) and, as floor and ceilings, n held-out digits no classifier trained on scored the same way."""
    split: str
    n: int
    frechet: FrechetTo                        # Fréchet distance to the reference digits' features
    legibility: Legibility                    # fitted on the reference digits
    real: torch.Tensor                        # features of n reference digits: the real manifold
    digits: tuple[torch.Tensor, torch.Tensor]  # every reference digit and its label: the CAS test set
    held_out: tuple[torch.Tensor, torch.Tensor]  # the n held-out digits and their labels
    ceilings: dict[str, Estimate]             # real-vs-real values of "fid", "precision", "recall", "legibility"
    train_precision: str = "auto"             # CAS training: the stage's precision, on the classifier's device
    device: str = "cpu"

    def cas(self, images01: torch.Tensor, labels: torch.Tensor) -> Estimate:
        """The classification accuracy score on the reference digits. Its interval resamples those digits only: it
        does not capture the noise of training the classifier."""
        return share(cas_hits(images01, labels, self.digits, self.train_precision, self.device))

    @cached_property
    def cas_real(self) -> Estimate:
        """The same recipe trained on the n held-out real digits: the ceiling."""
        return self.cas(*self.held_out)


def reference(classifier: nn.Module, mnist_root: str | Path, n: int, split: str = TEST,
              precision: str = "auto") -> Reference:
    """The reference for n samples: the `split` digits (test | validation) and n held-out digits."""
    return reference_from(classifier, load_split(mnist_root, split), load_split(mnist_root, HELD_OUT), n, split,
                          precision)


def reference_from(classifier: nn.Module, digits: tuple[torch.Tensor, torch.Tensor],
                   held_out: tuple[torch.Tensor, torch.Tensor], n: int, split: str = TEST,
                   precision: str = "auto") -> Reference:
    """`reference` on given digits: images N×1×28×28 in [0, 1] with their labels."""
    for what, have in ((f"{split}", len(digits[0])), ("held-out", len(held_out[0]))):
        if n > have:
            raise DataError(f"scoring {n} samples needs at least {n} {what} digits and this MNIST has {have}; "
                            "score fewer samples (sample.n_fid, guidance_sweep.n)")
    feats, logits = features_and_logits(classifier, digits[0])
    rule, frechet, real = Legibility.fit(feats, logits), FrechetTo(gaussian_stats(feats)), feats[spread(len(feats), n)]
    pick = spread(len(held_out[0]), n)
    held_out = held_out[0][pick], held_out[1][pick]
    hf, hl = features_and_logits(classifier, held_out[0])
    ceilings = {"fid": fid_estimate(hf, frechet), "precision": share(in_manifold(hf, real)),
                "recall": share(in_manifold(real, hf)), "legibility": share(rule.legible(hf, hl))}
    return Reference(split, n, frechet, rule, real, digits, held_out, ceilings, precision,
                     str(next(classifier.parameters()).device))


CEILING_NAMES = {"fid": "fid_baseline", "precision": "precision_real", "recall": "recall_real",
                 "legibility": "legibility_real", "cas": "cas_real"}


def sample_scores(classifier: nn.Module, images01: torch.Tensor, ref: Reference,
                  labels: torch.Tensor | None = None) -> dict:
    """Flat metrics of n generated images, each with `_lo` / `_hi` (95% bootstrap interval) and beside its
    real-vs-real value: fid (fid_baseline, the floor), precision, recall and legibility (`*_real`, the ceilings);
    with intended labels also accuracy, cas (cas_real) and per_class accuracy."""
    if len(images01) != ref.n:
        raise ValueError(f"{len(images01)} images scored against a reference for n = {ref.n}")
    feats, logits = features_and_logits(classifier, images01)
    found = {"fid": fid_estimate(feats, ref.frechet), "precision": share(in_manifold(feats, ref.real)),
             "recall": share(in_manifold(ref.real, feats)), "legibility": share(ref.legibility.legible(feats, logits))}
    ceilings = dict(ref.ceilings)
    if labels is not None:
        found |= {"accuracy": share(logits.argmax(1) == labels), "cas": ref.cas(images01, labels)}
        ceilings["cas"] = ref.cas_real
    scores: dict = {"n": ref.n, "reference": ref.split}
    for name, estimate in found.items():
        scores |= estimate.named(name)
        if name in ceilings:
            scores |= ceilings[name].named(CEILING_NAMES[name])
    if labels is not None:
        scores["per_class"] = {c: None if a is None else significant(a)
                               for c, a in per_class_accuracy(logits, labels).items()}
    return scores


def significant(x: float, digits: int = 6) -> float:
    """Round to significant digits: readable JSON that still shows small differences between runs."""
    return float(f"{x:.{digits}g}")
