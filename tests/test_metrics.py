"""Fréchet distance, precision / recall, the classification accuracy score, bootstrap intervals, accuracy helpers and
the scoring classifier, on small hand-made inputs: real digits must pass, obvious failures must fail."""
import warnings

import numpy as np
import pytest
import torch
from conftest import write_fake_mnist

from difflab.data.mnist import load_split
from difflab.evaluation import classifier as clf
from difflab.evaluation import metrics
from difflab.evaluation.metrics import (
    FrechetTo,
    Legibility,
    accuracy,
    fid_estimate,
    frechet_distance,
    gaussian_stats,
    in_manifold,
    per_class_accuracy,
    reference,
    sample_scores,
    share,
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


def test_sample_scores_give_every_number_its_interval_and_real_vs_real_value(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "CAS_STEPS", 4)  # the recipe's length does not matter here
    write_fake_mnist(tmp_path / "MNIST" / "raw", n_train=120, n_test=40)  # 80 train, 20 held out, 20 validation
    model = clf.Classifier().eval()
    ref = reference(model, tmp_path, n=20)
    assert ref.n == 20 and ref.split == "test" and ref.ceilings["fid"].value >= 0
    images, labels = torch.rand(20, 1, 28, 28), torch.arange(20) % 10
    scores = sample_scores(model, images, ref, labels)
    numbers = ["fid", "fid_baseline", "precision", "precision_real", "recall", "recall_real", "legibility",
               "legibility_real", "accuracy", "cas", "cas_real"]
    assert set(scores) == {"n", "reference", "per_class", *(f"{k}{end}" for k in numbers for end in ("", "_lo", "_hi"))}
    assert scores["n"] == 20 and scores["reference"] == "test" and set(scores["per_class"]) == {str(d) for d in range(10)}
    for k in numbers:
        assert scores[f"{k}_lo"] <= scores[k] <= scores[f"{k}_hi"], k
    assert scores == sample_scores(model, images, ref, labels), "the same inputs give the same bytes"
    unconditional = sample_scores(model, images, ref)
    assert not {"accuracy", "cas", "cas_real", "per_class"} & set(unconditional)
    assert reference(model, tmp_path, n=20, split="validation").split == "validation"
    with pytest.raises(ValueError, match="21 images scored against a reference for n = 20"):
        sample_scores(model, torch.rand(21, 1, 28, 28), ref)
    with pytest.raises(metrics.DataError, match="needs at least 30 held-out digits and this MNIST has 20"):
        reference(model, tmp_path, n=30)


def test_the_fast_frechet_distance_to_a_fixed_reference_equals_the_general_one():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
    to_real = FrechetTo(gaussian_stats(real))
    for fake in (rng.normal(size=(200, 16)) * 2 + 1, rng.normal(size=(10, 16))):  # the second: a singular covariance
        assert to_real(fake) == pytest.approx(frechet_distance(gaussian_stats(fake), gaussian_stats(real)), rel=1e-6)


def test_intervals_repeat_and_hold_the_estimate_and_narrow_with_more_items():
    rng = np.random.default_rng(5)
    hits = torch.from_numpy(rng.random(400) < 0.7)
    estimate = share(hits)
    assert estimate == share(hits) and estimate.value == pytest.approx(hits.float().mean().item())
    assert estimate.lo < estimate.value < estimate.hi
    assert share(hits[:100]).hi - share(hits[:100]).lo > estimate.hi - estimate.lo
    to_real = FrechetTo(gaussian_stats(rng.normal(size=(1000, 8))))
    fake = torch.from_numpy(rng.normal(size=(200, 8)) + 0.3)
    fid = fid_estimate(fake, to_real)
    assert fid.value == to_real(fake) and fid.lo < fid.value < fid.hi and fid == fid_estimate(fake, to_real)


def test_precision_is_fidelity_and_recall_is_coverage_on_hand_made_point_sets():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(300, 2, generator=gen)
    same = torch.randn(300, 2, generator=gen)
    collapsed = torch.zeros(300, 2)                       # every sample the same typical point
    shifted = torch.randn(300, 2, generator=gen) + 10     # nothing like the real set
    half = torch.randn(300, 2, generator=gen).abs()       # one quadrant of the real set: faithful, not covering
    pr = {name: (in_manifold(fake, real).float().mean().item(), in_manifold(real, fake).float().mean().item())
          for name, fake in {"same": same, "collapsed": collapsed, "shifted": shifted, "half": half}.items()}
    assert min(pr["same"]) > 0.9, pr
    assert pr["collapsed"][0] == 1.0 and pr["collapsed"][1] == 0.0, pr
    assert pr["shifted"] == (0.0, 0.0), pr
    assert pr["half"][0] > 0.9 and pr["half"][1] < 0.5, pr


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


@pytest.fixture(scope="module")
def font_digits(tmp_path_factory):
    """A fake MNIST of font-drawn digits (400 train, 100 held out, 100 validation, 300 test) and a classifier
    trained on its train split only."""
    root = tmp_path_factory.mktemp("font_mnist")
    write_fake_mnist(root / "MNIST" / "raw", n_train=600, n_test=300)
    x, y = load_split(root, "train")
    cfg = clf.ClassifierConfig(epochs=20, batch_size=32, lr=3e-3, max_shift=1, device="cpu", precision="fp32")
    return root, clf.train_classifier(x, y, cfg)


def test_legibility_is_high_for_real_digits_and_low_for_noise_and_blank_images(font_digits):
    """Digits the classifier never saw read as digits; noise, blank, white and grey images do not, although the
    classifier alone is confident about most of some of them."""
    root, model = font_digits
    ref = reference(model, root, n=100)
    assert ref.ceilings["legibility"].value >= 0.9  # scored on held-out digits, not on the test digits it was fit on
    gen = torch.Generator().manual_seed(1)
    cases = {"validation digits": load_split(root, "validation")[0],
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
    assert scores["validation digits"] >= 0.85, scores
    fakes = cases.keys() - {"validation digits"}
    assert all(scores[name] <= 0.05 for name in fakes), scores
    assert max(confident[name] for name in fakes) >= 0.5, "the case the realism check exists for"


def test_precision_recall_and_cas_tell_real_digits_from_one_repeated_digit_and_from_noise(font_digits):
    """A model that draws the same perfect 1 for every prompt: high precision, low recall, low classification
    accuracy score. Real digits it never trained on: all high, CAS near the real-trained one. Noise: nothing."""
    root, model = font_digits
    ref = reference(model, root, n=100)
    x, y = load_split(root, "validation")
    labels = torch.arange(100) % 10
    one = x[y == 1][:1].expand(100, -1, -1, -1)
    real = sample_scores(model, x, ref, y)
    repeated = sample_scores(model, one, ref, labels)
    noise = sample_scores(model, torch.rand((100, 1, 28, 28), generator=torch.Generator().manual_seed(2)), ref)
    summary = {name: {k: s.get(k) for k in ("fid", "precision", "recall", "cas")}
               for name, s in (("real", real), ("repeated", repeated), ("noise", noise))}
    assert min(real["precision_real"], real["recall_real"], real["cas_real"]) >= 0.8, real
    assert real["precision"] >= 0.8 and real["recall"] >= 0.8 and real["cas"] >= real["cas_real"] - 0.1, summary
    assert real["fid_lo"] <= real["fid_baseline_hi"], summary  # real digits are as far as real digits
    assert repeated["precision"] >= 0.9 and repeated["recall"] <= 0.1 and repeated["cas"] <= 0.25, summary
    assert noise["precision"] <= 0.05 and noise["recall"] <= 0.05, summary
    assert min(repeated["fid"], noise["fid"]) > 3 * real["fid_baseline_hi"], summary
