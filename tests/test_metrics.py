"""Fréchet distance, accuracy helpers and the scoring classifier, on small hand-made inputs."""
import warnings

import numpy as np
import pytest
import torch
from conftest import write_fake_mnist

from difflab.data.mnist import load_mnist
from difflab.evaluation import classifier as clf
from difflab.evaluation.metrics import (
    Legibility,
    accuracy,
    frechet_distance,
    gaussian_stats,
    per_class_accuracy,
    reference,
    sample_scores,
)

pytestmark = pytest.mark.unit


def random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + d * np.eye(d)


def test_identical_sets_are_at_distance_zero():
    feats = np.random.default_rng(0).normal(size=(500, 8))
    assert frechet_distance(gaussian_stats(feats), gaussian_stats(feats)) == pytest.approx(0, abs=1e-8)


def test_diagonal_gaussians_match_the_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert frechet_distance((mu1, np.diag(v1)), (mu2, np.diag(v2))) == pytest.approx(expected, rel=1e-9)


def test_distance_is_symmetric_and_positive_for_full_covariances():
    rng = np.random.default_rng(2)
    a = (rng.normal(size=5), random_spd(rng, 5))
    b = (rng.normal(size=5), random_spd(rng, 5))
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    assert frechet_distance(a, b) > 0


def test_fewer_samples_than_dimensions_gives_a_finite_distance_without_warnings():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = frechet_distance(gaussian_stats(a), gaussian_stats(b))
    assert np.isfinite(d) and d > 0


def test_accuracy_helpers_on_hand_made_logits():
    logits = torch.tensor([[5.0, 0, 0], [0, 5, 0], [0, 0, 5], [5, 0, 0]])
    labels = torch.tensor([0, 1, 1, 0])
    assert accuracy(logits, labels) == 0.75
    assert per_class_accuracy(logits, labels, num_classes=3) == {"0": 1.0, "1": 0.5, "2": None}


def blocks(n, gen):
    """Separable toy digits: class c lights a 6x6 block at a class-specific place."""
    y = torch.arange(n) % 10
    x = torch.rand((n, 1, 28, 28), generator=gen) * 0.2
    for i, c in enumerate(y.tolist()):
        r, col = 2 + 8 * (c // 4), 2 + 6 * (c % 4)
        x[i, 0, r:r + 6, col:col + 6] = 1.0
    return x, y


def test_classifier_learns_a_separable_toy_set_and_round_trips(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x, y = blocks(300, gen)
    cfg = clf.ClassifierConfig(epochs=3, batch_size=32, lr=3e-3, max_shift=1, device="cpu", precision="fp32")
    model = clf.train_classifier(x, y, cfg)
    x_test, y_test = blocks(100, gen)
    logits = clf.predict(model, x_test)
    assert logits.shape == (100, 10) and clf.features(model, x_test).shape == (100, clf.FEATURES)
    assert accuracy(logits, y_test) > 0.5  # chance is 0.1

    clf.save_classifier(tmp_path / "c.safetensors", model)
    loaded = clf.load_classifier(tmp_path / "c.safetensors")
    assert not loaded.training
    assert torch.equal(clf.predict(loaded, x_test), logits)
    retrained = clf.train_classifier(x, y, cfg)
    assert torch.equal(clf.predict(retrained, x_test), logits), "training must be deterministic"


def test_load_classifier_names_the_fix():
    with pytest.raises(FileNotFoundError, match="dvc repro classifier"):
        clf.load_classifier("no/such/file.safetensors")


def test_random_shift_moves_content_without_losing_it():
    x = torch.zeros(4, 1, 28, 28)
    x[:, 0, 12:16, 12:16] = 1
    shifted = clf.random_shift(x, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape and torch.equal(shifted.sum((1, 2, 3)), x.sum((1, 2, 3)))


def test_sample_scores_report_baseline_and_per_class_accuracy(tmp_path):
    write_fake_mnist(tmp_path / "MNIST" / "raw", n_train=60, n_test=40)
    model = clf.Classifier().eval()
    ref = reference(model, tmp_path, n=30)
    assert ref.n == 30 and ref.baseline >= 0
    images, labels = torch.rand(30, 1, 28, 28), torch.arange(30) % 10
    scores = sample_scores(model, images, ref, labels)
    assert set(scores) == {"fid", "fid_baseline", "n", "legibility", "legibility_real", "accuracy", "per_class"}
    assert 0 <= scores["legibility"] <= 1 and scores["legibility_real"] == pytest.approx(ref.legibility_real)
    assert scores["n"] == 30 and set(scores["per_class"]) == {str(d) for d in range(10)}
    assert "accuracy" not in sample_scores(model, images, ref)


def test_legibility_needs_a_confident_answer_and_features_near_the_real_ones():
    gen = torch.Generator().manual_seed(0)
    centers = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    y = torch.arange(400) % 2
    feats = centers[y] + 0.5 * torch.randn(400, 2, generator=gen)
    sure = 10 * torch.nn.functional.one_hot(y, 2).float()
    rule = Legibility.fit(feats, sure)
    assert rule.score(feats, sure) >= 0.98  # real data: confident, and all but the farthest 1% within the radius
    cases = torch.tensor([[5.0, 0.0], [40.0, -40.0], [5.0, 0.0]])
    logits = torch.tensor([[10.0, 0.0], [10.0, 0.0], [1.0, 0.0]])  # near+sure, far+sure, near+unsure (p = 0.73)
    assert rule.legible(cases, logits).tolist() == [True, False, False]


def test_legibility_is_high_for_real_digits_and_low_for_noise_and_blank_images(tmp_path):
    """A classifier trained on (font-drawn) digits: held-out digits read as digits; noise, blank, white and grey
    images do not, although the classifier alone is confident about most of some of them."""
    write_fake_mnist(tmp_path / "MNIST" / "raw", n_train=600, n_test=300)
    x, y = load_mnist(tmp_path, train=True)
    cfg = clf.ClassifierConfig(epochs=20, batch_size=32, lr=3e-3, max_shift=1, device="cpu", precision="fp32")
    model = clf.train_classifier(x[100:], y[100:], cfg)  # the first 100 are held out
    ref = reference(model, tmp_path, n=100)
    assert ref.legibility_real >= 0.9
    gen = torch.Generator().manual_seed(1)
    cases = {"held-out digits": x[:100],
             "uniform noise": torch.rand((100, 1, 28, 28), generator=gen),
             "gaussian noise": (0.5 + 0.3 * torch.randn((100, 1, 28, 28), generator=gen)).clamp(0, 1),
             "sparse noise": (torch.rand((100, 1, 28, 28), generator=gen) < 0.15).float(),
             "blank": torch.zeros(100, 1, 28, 28), "white": torch.ones(100, 1, 28, 28),
             "grey": torch.full((100, 1, 28, 28), 0.3)}
    scores, confident = {}, {}
    for name, images in cases.items():
        feats, logits = clf.features_and_logits(model, images)
        scores[name] = ref.legibility.score(feats, logits)
        confident[name] = (logits.softmax(1).max(1).values >= 0.9).float().mean().item()
    assert scores["held-out digits"] >= 0.85, scores
    fakes = cases.keys() - {"held-out digits"}
    assert all(scores[name] <= 0.05 for name in fakes), scores
    assert max(confident[name] for name in fakes) >= 0.5, "the case the realism check exists for"
