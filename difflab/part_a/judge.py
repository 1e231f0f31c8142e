"""Does an illusion work? Each reading of an anagram or hybrid must read as its digit *and* look like a real digit.

A classifier asked about an image unlike any digit (an upside-down 7, a jigsaw of strokes) still answers with
confidence, so the classifier alone is fooled; and on real MNIST a distance test in its features is fooled too (58 %
of upside-down 7s are as close to the 2s as real 2s are), because a 10-way classifier has no reason to tell an
upside-down 7 from a 2. So the judge is the pipeline's classifier taught an eleventh answer, NOT_A_DIGIT, on
transformed real digits (`train_judge`), and `DigitScorer` adds a test fitted on real data in the judge's
penultimate features: one Gaussian per class with a shared covariance (Lee et al. 2018); an image is realistic for a
class when its Mahalanobis distance to that class is within the 95th percentile of real held-out digits of the class.
An unfiltered view must be read as its digit by the judge and be realistic. A hybrid's readings are judged by
scorers fitted on real digits seen the same way (blurred; high-passed), reading with the Gaussian posterior, since a
person reads a blurred digit as a digit and the judge never saw one. Every reading keeps the band's real amplitude
(`Strokes`: one scale per filter, fitted on real digits, never a per-image stretch), so a band too faint to see fails.
Per illusion it reports the success rate and Visual Anagrams' alignment and concealment scores (Geng et al.,
CVPR 2024, sec. 4.1) with the class log-posteriors in place of CLIP similarities:
A = min over views i of p(y_i | view_i); C = mean over views i of softmax over the illusion's targets j of
log p(y_j | view_i), taken at j = i.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from difflab.evaluation.metrics import ClassGaussians
from difflab.part_a.filters import highpass, lowpass

Transform = Callable[[torch.Tensor], torch.Tensor]
Band = Callable[[torch.Tensor], torch.Tensor]  # a linear filter: the part of an image in a band of frequencies
REAL_QUANTILE = 0.95  # a view is realistic when as close to its class as 95 % of real held-out digits
QUANTILES = (0.1, 0.5, 0.9)


def _as_is(images01: torch.Tensor) -> torch.Tensor:
    return images01


@dataclass(frozen=True)
class Strokes:
    """A band of frequencies as a person sees it: bright strokes on black at the band's real amplitude, i.e. its
    positive part times one fixed `scale`, clipped to [0, 1]. The scale is fitted once on real digits (`fit`) and is
    the same for every image, so a faint band reads faint; a per-image stretch would show it at full contrast."""
    band: Band
    scale: float

    @classmethod
    def fit(cls, band: Band, real01: torch.Tensor) -> "Strokes":
        """The scale that brings the median real digit's strokes to the median real digit's peak (1 on MNIST)."""
        def peak(x: torch.Tensor) -> torch.Tensor:
            return x.amax(dim=(1, 2, 3)).median()

        return cls(band, (peak(real01) / peak(band(real01).clamp_min(0)).clamp_min(1e-8)).item())

    def __call__(self, images01: torch.Tensor) -> torch.Tensor:
        return (self.band(images01).clamp_min(0) * self.scale).clamp_max(1)


@dataclass(frozen=True)
class DigitScorer:
    """Reads a batch of [0, 1] images, as they are or through `reading` (a hybrid's band): the classifier's
    probabilities and the realism test per class."""
    model: nn.Module
    gaussians: ClassGaussians  # real digits in the model's penultimate features, seen through `reading`
    thresholds: torch.Tensor   # (10,) REAL_QUANTILE of real held-out digits' distances to their own class
    reading: Transform = _as_is  # what the scorer sees of an image (the figures draw it)
    use_head: bool = False     # read with the model's own head (unfiltered images) instead of the Gaussian posterior

    @classmethod
    def fit(cls, model: nn.Module, fit_images: torch.Tensor, fit_labels: torch.Tensor, held_images: torch.Tensor,
            held_labels: torch.Tensor, reading: Transform | None = None, use_head: bool = False) -> "DigitScorer":
        """Class Gaussians from fit_*, thresholds from held_* (distinct real digits), all seen through `reading`
        (e.g. the low-pass filter a hybrid is read through from afar)."""
        from difflab.evaluation.classifier import features

        t = reading or _as_is
        gaussians = ClassGaussians.fit(features(model, t(fit_images)), fit_labels, 10)
        dist = gaussians.distances(features(model, t(held_images))).float()
        own = dist[torch.arange(len(held_labels)), held_labels]
        thresholds = torch.stack([own[held_labels == d].quantile(REAL_QUANTILE) for d in range(10)])
        return cls(model, gaussians, thresholds, t, use_head)

    def read(self, images01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(class | image) (N, 10 or 11), realistic (N, 10) bool: within the threshold of each class), of the
        images as the scorer sees them (its `reading`).

        With use_head the probabilities are the model's own (the judge's 11th class is NOT_A_DIGIT, so an argmax of
        10 reads as no digit); otherwise the posterior of the fitted Gaussian classes (equal priors, shared
        covariance), p(y | f) proportional to exp(-d_y^2 / 2), which also reads digits seen through a filter the
        scorer was fitted on (blurred, high-passed)."""
        from difflab.evaluation.classifier import features

        feats = features(self.model, self.reading(images01.float().cpu()))
        dist = self.gaussians.distances(feats).float()
        if self.use_head:
            with torch.inference_mode():
                logits = self.model.head(feats.to(next(self.model.parameters()).device)).float().cpu()
            return torch.log_softmax(logits, 1), dist <= self.thresholds
        return torch.log_softmax(-dist.double() ** 2 / 2, 1).float(), dist <= self.thresholds

    def passes(self, images01: torch.Tensor, target: int | torch.Tensor) -> torch.Tensor:
        """(N,) bool: the classifier reads `target` and the image is as close to that class as real digits are."""
        logp, real = self.read(images01)
        target = torch.as_tensor(target).expand(len(images01))
        rows = torch.arange(len(images01))
        return (logp.argmax(1) == target) & real[rows, target]


def quantiles(x: torch.Tensor) -> dict[str, float]:
    """The QUANTILES of a 1-D tensor as {"q10": .., "q50": .., "q90": ..}, rounded for metrics JSON."""
    q = torch.quantile(x.double(), torch.tensor(QUANTILES, dtype=torch.double))
    return {f"q{round(p * 100)}": round(v.item(), 4) for p, v in zip(QUANTILES, q)}


def score_views(readings: Sequence[tuple[DigitScorer, torch.Tensor]], targets: Sequence[int | torch.Tensor]) -> dict:
    """Per illusion (N seeds): success (every view passes its scorer), alignment A and concealment C per seed.

    readings[i] = (scorer for view i, the N images of view i, which the scorer sees through its own reading);
    targets[i] = the digit view i must read as (an int, or one per image)."""
    n = len(readings[0][1])
    rows = torch.arange(n)
    ys = [torch.as_tensor(t).long().expand(n) for t in targets]
    ok, logps = torch.ones(n, dtype=torch.bool), []
    for (scorer, images), y in zip(readings, ys):
        logp, real = scorer.read(images)
        ok &= (logp.argmax(1) == y) & real[rows, y]
        logps.append(logp)
    own = torch.stack([lp[rows, y] for lp, y in zip(logps, ys)], 1)                         # (N, views)
    among = torch.stack([torch.stack([lp[rows, y] for y in ys], 1) for lp in logps], 1)     # (N, views, targets)
    concealment = torch.log_softmax(among, -1).diagonal(dim1=1, dim2=2).exp().mean(1)       # (N,)
    return {"success": ok, "alignment": own.exp().min(1).values, "concealment": concealment}


def summary(scores: dict) -> dict:
    """Success rate and the quantiles of A and C over seeds, for metrics JSON."""
    return {"success": round(scores["success"].float().mean().item(), 4),
            "alignment": quantiles(scores["alignment"]), "concealment": quantiles(scores["concealment"])}


def hybrid_bands(kernel: int, sigma: float) -> list[Band]:
    """A hybrid's two bands: what a person sees from afar (the low-pass) and up close (the high-pass)."""
    return [lambda x: lowpass(x, kernel, sigma), lambda x: highpass(x, kernel, sigma)]


def three_bands(low: tuple[int, float], high: tuple[int, float]) -> list[Band]:
    """A three-band hybrid's bands: from afar (low-pass), at middle distance (between the filters) and up close
    (high-pass); low and high are (kernel, sigma) with low's sigma the larger."""
    return [lambda x: lowpass(x, *low), lambda x: lowpass(x, *high) - lowpass(x, *low), lambda x: highpass(x, *high)]


@dataclass
class Judge:
    """Judges digit illusions: the classifier, real digits to fit realism on (fit and held-out, each (x, y)), and
    the digit a prompt names. A scorer per way of seeing (plain, or through a hybrid's filter) is fitted once."""
    model: nn.Module
    fit_digits: tuple[torch.Tensor, torch.Tensor]
    held_digits: tuple[torch.Tensor, torch.Tensor]
    label: Callable[[str], int]
    scorers: dict = field(default_factory=dict)

    def scorer(self, key: tuple = (), reading: Transform | None = None) -> DigitScorer:
        """The scorer for images seen through `reading` (cached under `key`; () is the plain scorer)."""
        if key not in self.scorers:
            self.scorers[key] = DigitScorer.fit(self.model, *self.fit_digits, *self.held_digits, reading,
                                                use_head=reading is None)
        return self.scorers[key]

    def band_scorers(self, key: tuple, bands: Sequence[Band]) -> list[DigitScorer]:
        """A scorer per band of an illusion (cached under key), fitted on real digits seen the same way: the lowest
        band as it is (a blurred digit), every higher band as Strokes at a scale fitted on the fit digits."""
        return [self.scorers.get((*key, i)) or self.scorer(
            (*key, i), band if i == 0 else Strokes.fit(band, self.fit_digits[0])) for i, band in enumerate(bands)]

    def hybrid_scorers(self, kernel: int, sigma: float) -> list[DigitScorer]:
        """Scorers for a hybrid's far and close-up readings (blurred; high-passed real digits)."""
        return self.band_scorers(("hybrid", kernel, sigma), hybrid_bands(kernel, sigma))


NOT_A_DIGIT = 10
# Transforms of a real digit that still show a digit (the second class): positives, not negatives, for the judge.
STILL_A_DIGIT = {"flip": {0: 0, 1: 1, 3: 3, 8: 8}, "rotate_180": {0: 0, 1: 1, 8: 8, 6: 9, 9: 6},
                 "inner_circle": {0: 0, 1: 1, 8: 8, 6: 9, 9: 6}}
NEGATIVE_VIEWS = ("flip", "rotate_cw", "rotate_ccw", "rotate_180", "jigsaw", "patch_permute", "pixel_permute",
                  "inner_circle", "square_hinge")


def judge_training_set(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Real digits with their labels, plus as many transformed real digits labelled NOT_A_DIGIT (an upside-down 7,
    a jigsaw of a 3, ... split evenly over NEGATIVE_VIEWS; the transforms that still show a digit keep that digit's
    label), plus noise and blank images: the failures a 10-way classifier reads with confidence."""
    from difflab.part_a.views import get_view

    xs, ys = [x], [y]
    k = len(x) // len(NEGATIVE_VIEWS)
    order = torch.randperm(len(x), generator=gen)
    for i, name in enumerate(NEGATIVE_VIEWS):
        idx = order[i * k:(i + 1) * k]
        still = STILL_A_DIGIT.get(name, {})
        xs.append(get_view(name).view(x[idx]))
        ys.append(torch.tensor([still.get(int(label), NOT_A_DIGIT) for label in y[idx]], dtype=torch.long))
    brightness = torch.rand(k, 1, 1, 1, generator=gen)
    xs += [torch.rand(k, 1, *x.shape[-2:], generator=gen) * brightness, torch.zeros(k // 10 + 1, *x.shape[1:])]
    ys += [torch.full((k,), NOT_A_DIGIT), torch.full((k // 10 + 1,), NOT_A_DIGIT)]
    return torch.cat(xs), torch.cat(ys)


def train_judge(base: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int = 1,
                batch_size: int = 128, lr: float = 1e-3) -> nn.Module:
    """The classifier taught an eleventh answer, NOT_A_DIGIT, on judge_training_set: its ten digit rows start from
    the trained head, so it reads digits as the classifier does; deterministic given seed."""
    import copy

    import torch.nn.functional as F

    device = next(base.parameters()).device
    model = copy.deepcopy(base).float()
    head = nn.Linear(base.head.in_features, NOT_A_DIGIT + 1).to(device)
    with torch.no_grad():
        head.weight.zero_(), head.bias.zero_()
        head.weight[:NOT_A_DIGIT], head.bias[:NOT_A_DIGIT] = base.head.weight, base.head.bias
    model.head = head
    gen = torch.Generator().manual_seed(seed)
    data, labels = judge_training_set(x, y, gen)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    with torch.enable_grad():
        for _ in range(epochs):
            perm = torch.randperm(len(data), generator=gen)
            for i in range(0, len(data), batch_size):
                idx = perm[i:i + batch_size]
                loss = F.cross_entropy(model(data[idx].to(device)), labels[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return model.eval()


def mnist_judge(classifier_path, mnist_root, device: torch.device, seed: int = 0, n_train: int = 20000,
                n_fit: int = 5000, n_held: int = 5000) -> Judge:
    """The pipeline's classifier, taught NOT_A_DIGIT on the first n_train MNIST training digits (train_judge), with
    realism fitted on the next n_fit training digits and calibrated on the first n_held test digits; prompts name
    digits as the MNIST backbone reads them."""
    from difflab.data.mnist import load_mnist
    from difflab.evaluation.classifier import load_classifier
    from difflab.pipeline.digit_prompts import parse_prompt

    x, y = load_mnist(mnist_root, train=True)
    xt, yt = load_mnist(mnist_root, train=False)
    model = train_judge(load_classifier(classifier_path, device), x[:n_train], y[:n_train], seed)
    fit = slice(n_train, n_train + n_fit)
    if len(x[fit]) < 10 * 3:  # a small data set (the tests' fake MNIST): fit on the training digits themselves
        fit = slice(0, n_fit)
    return Judge(model, (x[fit], y[fit]), (xt[:n_held], yt[:n_held]), parse_prompt)
