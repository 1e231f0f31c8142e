"""Numbers for what the pipeline makes: PSNR, and with the MNIST classifier the Fréchet distance of its features
(always beside the real-vs-real baseline at the same sample size), legibility (beside real digits' legibility) and
intended-class accuracy."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import nn

from difflab.data.mnist import load_mnist
from difflab.evaluation.classifier import accuracy, features, features_and_logits

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


@dataclass(frozen=True)
class Reference:
    """Classifier-feature statistics of the real test set, and the real-vs-real Fréchet distance of n training
    images against it: the floor that n generated images could reach. The legibility rule is fit on the test set,
    and `legibility_real` is its score there: the ceiling for generated images."""
    stats: Stats
    baseline: float
    n: int
    legibility: Legibility
    legibility_real: float


def reference(classifier: nn.Module, mnist_root: str | Path, n: int) -> Reference:
    """Reference for scoring n samples: the whole MNIST test set, and its first n training images as baseline."""
    feats, logits = features_and_logits(classifier, load_mnist(mnist_root, train=False)[0])
    stats = gaussian_stats(feats)
    baseline = features(classifier, load_mnist(mnist_root, train=True)[0][:n])
    rule = Legibility.fit(feats, logits)
    return Reference(stats, frechet_distance(gaussian_stats(baseline), stats), n, rule, rule.score(feats, logits))


def sample_scores(classifier: nn.Module, images01: torch.Tensor, ref: Reference,
                  labels: torch.Tensor | None = None) -> dict:
    """fid, fid_baseline, n, legibility and legibility_real for generated images; with intended labels also
    accuracy and per_class accuracy."""
    feats, logits = features_and_logits(classifier, images01)
    scores = {"fid": significant(frechet_distance(gaussian_stats(feats), ref.stats)),
              "fid_baseline": significant(ref.baseline), "n": len(images01),
              "legibility": significant(ref.legibility.score(feats, logits)),
              "legibility_real": significant(ref.legibility_real)}
    if labels is not None:
        scores["accuracy"] = significant(accuracy(logits, labels))
        scores["per_class"] = {c: None if a is None else significant(a)
                               for c, a in per_class_accuracy(logits, labels).items()}
    return scores


def significant(x: float, digits: int = 6) -> float:
    """Round to significant digits: readable JSON that still shows small differences between runs."""
    return float(f"{x:.{digits}g}")
