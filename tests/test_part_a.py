"""Part A's loops and deliverables: timestep schedules, the guidance variants, inpainting, user images, illusion
scores, and whole runs on a tiny MNIST backbone and a tiny DeepFloyd IF."""
import json
import logging
import runpy
from pathlib import Path

import pytest
import torch
from conftest import write_fake_mnist
from part_a_fixtures import (
    one_cpu_thread,  # noqa: F401  (autouse)
    save_tiny_class_ddpm,
    tiny_if_repos,
    tiny_mnist_backbone,
)

from difflab.backbones import embeddings as prompt_embeds
from difflab.backbones.registry import get_backbone
from difflab.backbones.mnist import MnistBackbone
from difflab.data.images import ImageError
from difflab.part_a import loops as pa
from difflab.part_a import sections
from difflab.part_a.config import PartAConfig
from difflab.part_a.filters import highpass, kernel_for, lowpass
from difflab.part_a.inputs import part_a_images, user_images
from difflab.part_a.judge import DigitScorer, Judge, score_views, summary, train_judge
from difflab.part_a.sections import PartA, sampling
from difflab.part_a.sections.context import SEEDS, UPSAMPLE
from difflab.part_a.views import FlipView, View, hybrid_views, three_band_views
from difflab.pipeline.params import load

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
TINY_PARAMS = REPO / "tests" / "tiny_params.yaml"
CPU = torch.device("cpu")
T = 20


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> MnistBackbone:
    return tiny_mnist_backbone(tmp_path_factory.mktemp("mnist"), T)


def stand_in_classifier(images01: torch.Tensor) -> torch.Tensor:
    """Any callable from images to labels: here, brightness decides the digit."""
    return (images01.mean(dim=(1, 2, 3)) * 40).long().clamp(0, 9)


# ------------------------------------------------------------------ params

@pytest.mark.parametrize("key,value,message", [
    (("backbone",), "deepfloy", "expected one of 'mnist', 'deepfloyd'.*did you mean 'deepfloyd'"),
    (("mnist", "prompts", "photo"), "a dog", "cannot read the prompt 'a dog'.*a handwritten seven"),
    (("mnist", "prompts", "anagrams"), [["flop", "1", "7"]], "anagrams\\[0\\].*view one of identity, flip"),
    (("deepfloyd", "prompts", "hybrids"), [["a dog"]], "hybrids\\[0\\].*low-pass prompt, high-pass prompt"),
    (("mnist", "inpaint_box"), [0.5, 0.5, 0.2, 0.9], "top < bottom"),
    (("three_band_sigmas",), [1.0, 4.0], "larger sigma, smaller sigma"),
    (("mnist", "prompts", "three_band"), [["0", "8"]], "three_band\\[0\\].*middle-frequency"),
    (("pair_matrix", "views"), ["flip", "twirl"], "pair_matrix.views\\[1\\].*one of identity"),
])
def test_bad_part_a_params_say_what_is_allowed(key, value, message):
    from difflab.pipeline.params import ParamsError, validate

    params = load(TINY_PARAMS)
    section = params["part_a"]
    for k in key[:-1]:
        section = section[k]
    section[key[-1]] = value
    with pytest.raises(ParamsError, match=message):
        validate(params)


# ------------------------------------------------------------------ schedules

def test_strided_timesteps_match_the_course():
    ts = pa.strided_timesteps(1000, 30)
    assert ts[:3] == [990, 960, 930] and ts[-1] == 0 and len(ts) == 34
    mnist_ts = pa.strided_timesteps(300, pa.stride_for(300, 0.03))
    assert mnist_ts[:2] == [297, 288] and mnist_ts[-1] == 0 and len(mnist_ts) == 34
    assert mnist_ts[10] / 300 == ts[10] / 1000  # i_start = 10 means the same noise level on both backbones
    assert pa.inference_timesteps(1000, 20)[:2] == [950, 900] and len(pa.inference_timesteps(1000, 20)) == 20
    assert [pa.noise_timestep(1000, f) for f in (0.25, 0.5, 0.75)] == [250, 500, 750]
    assert [pa.noise_timestep(300, f) for f in (0.25, 0.5, 0.75)] == [75, 150, 225]
    with pytest.raises(ValueError, match="stride"):
        pa.strided_timesteps(10, 10)


def test_one_step_denoise_inverts_the_forward_process_given_the_true_noise(mnist):
    x0, noise = torch.rand(2, 1, 28, 28), torch.randn(2, 1, 28, 28)
    x_t = mnist.schedule.forward(x0, 15, noise)
    torch.testing.assert_close(pa.one_step_denoise(mnist, x_t, 15, lambda x, t, tp: (noise, None)), x0,
                               rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ guidance variants

def test_anagram_and_hybrid_reduce_to_cfg(mnist):
    x, c, u = torch.randn(1, 1, 28, 28), mnist.embed(["4"]), mnist.embed([""])
    cfg_eps, cfg_var = pa.cfg_noise(mnist, c, u, 5.0)(x, 10, 8)
    ana_eps, ana_var = pa.illusion(mnist, [View(), View()], [c, c], u, 5.0, "mean")(x, 10, 8)
    hyb_eps, _ = pa.illusion(mnist, hybrid_views(15, 0.875), [c, c], u, 5.0, "sum")(x, 10, 8)
    three_eps, three_var = pa.illusion(mnist, three_band_views((11, 1.75), (3, 0.44)), [c, c, c], u, 5.0,
                                       "sum")(x, 10, 8)
    torch.testing.assert_close(three_eps, cfg_eps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(three_var, cfg_var)
    torch.testing.assert_close(ana_eps, cfg_eps)
    torch.testing.assert_close(ana_var, cfg_var)
    torch.testing.assert_close(hyb_eps, cfg_eps, rtol=1e-5, atol=1e-5)


def test_anagram_averages_the_flipped_estimate(mnist):
    x, c1, c2, u = torch.randn(1, 1, 28, 28), mnist.embed(["7"]), mnist.embed(["1"]), mnist.embed([""])
    eps, _ = pa.illusion(mnist, [View(), FlipView()], [c1, c2], u, 3.0, "mean")(x, 10, None)
    e1, _ = pa.cfg_noise(mnist, c1, u, 3.0)(x, 10, None)
    e2, _ = pa.cfg_noise(mnist, c2, u, 3.0)(x.flip(-2), 10, None)
    torch.testing.assert_close(eps, (e1 + e2.flip(-2)) / 2)


def test_hybrid_sums_the_low_pass_of_one_estimate_and_the_high_pass_of_the_other(mnist):
    """Band views feed x_t itself to every prompt (view is the identity) and filter the estimates."""
    x, c1, c2, u = torch.randn(1, 1, 28, 28), mnist.embed(["0"]), mnist.embed(["8"]), mnist.embed([""])
    eps, _ = pa.illusion(mnist, hybrid_views(7, 1.0), [c1, c2], u, 3.0, "sum")(x, 10, None)
    e1, _ = pa.cfg_noise(mnist, c1, u, 3.0)(x, 10, None)
    e2, _ = pa.cfg_noise(mnist, c2, u, 3.0)(x, 10, None)
    torch.testing.assert_close(eps, lowpass(e1, 7, 1.0) + highpass(e2, 7, 1.0))
    with pytest.raises(ValueError, match="reduction must be one of mean, sum"):
        pa.illusion(mnist, hybrid_views(7, 1.0), [c1, c2], u, 3.0, "max")


def test_every_section_draws_its_own_noise():
    """No two sections (nor a section's second-stage upsampling, + UPSAMPLE) share a seed with params.yaml's lists."""
    params = load(REPO / "params.yaml")
    for backbone in ("mnist", "deepfloyd"):
        params["part_a"]["backbone"] = backbone
        cfg = PartAConfig.from_params(params)
        ranges = {"A.0 samples": len(cfg.inference_steps), "A.1.8 anagrams": len(cfg.prompts.anagrams),
                  "A.1.8 pair matrix": len(cfg.pair_views), "A.1.9 hybrids": len(cfg.prompts.hybrids),
                  "A.1.9 sigma sweep": len(cfg.sweep_sigmas), "A.1.9 three band": len(cfg.prompts.three_band)}
        upsampled = {"A.0 samples", "A.1.5 sampling", "A.1.6 cfg", "A.1.8 anagrams", "A.1.9 hybrids",
                     "A.1.9 three band"}
        seeds = [SEEDS[s] + k + extra for s in SEEDS for k in range(ranges.get(s, 1))
                 for extra in ((0, UPSAMPLE) if s in upsampled else (0,))]
        assert len(seeds) == len(set(seeds)), backbone


def test_inpainting_keeps_the_known_region(mnist):
    x0 = torch.rand(2, 1, 28, 28)
    mask = torch.zeros(2, 1, 28, 28)
    mask[..., 10:20, 10:20] = 1
    out = pa.inpaint(mnist, x0, mask, pa.strided_timesteps(T, 2), pa.conditional(mnist, mnist.embed(["3", "3"])),
                     torch.Generator().manual_seed(0))
    keep = mask == 0
    # after the last step the known region is x0 noised to t = 0, i.e. almost exactly x0
    torch.testing.assert_close(out[keep], x0[keep], rtol=0, atol=0.05)
    assert not torch.allclose(out[~keep], x0[~keep], atol=0.05)


def test_sdedit_distance_to_the_input_grows_as_i_start_decreases(mnist):
    """The SDEdit trade-off: the earlier the start (more noise), the further the result from the input. With the
    unconditional prompt (MNIST's generic prompt) nothing pulls the edit toward the input's digit."""
    x0 = torch.rand(16, 1, 28, 28)
    ts = pa.strided_timesteps(T, 2)  # 18, 16, ..., 0
    uncond = pa.cfg_noise(mnist, mnist.embed([""] * 16), mnist.embed([""] * 16), 7.0)
    distance = [(pa.sdedit(mnist, x0, ts, i, uncond, torch.Generator().manual_seed(0)) - x0).square().mean().item()
                for i in (8, 6, 3, 0)]
    assert distance == sorted(distance) and distance[-1] > 4 * distance[0]


def test_sdedit_uses_the_generic_prompt_and_several_digits():
    params = load(REPO / "params.yaml")
    cfg = PartAConfig.from_params(params)
    assert cfg.prompts.sdedit == "" and cfg.prompts.photo != ""  # unconditional on MNIST; A.1.7.3 keeps its prompts
    assert len(params["part_a"]["mnist"]["test_indices"]) >= 3
    assert len(cfg.prompts.edits) == len(params["part_a"]["mnist"]["test_indices"])


def test_thresholding_param_applies_the_backbones_x0_processing_in_a0_only(mnist, tmp_path, monkeypatch):
    import dataclasses

    params = _tiny_params("mnist")
    cfg = PartAConfig.from_params(params)
    assert cfg.thresholding is False  # off unless part_a.backbone is deepfloyd and its thresholding is on
    params["part_a"]["backbone"], params["part_a"]["deepfloyd"]["thresholding"] = "deepfloyd", True
    assert PartAConfig.from_params(params).thresholding is True
    calls = []
    monkeypatch.setattr(mnist, "threshold", lambda x0: calls.append(len(x0)) or x0.clamp(0, 1), raising=False)
    table = prompt_embeds.embed_all(mnist, cfg.prompts.all())
    run = PartA(mnist, table, dataclasses.replace(cfg, thresholding=True), None, tmp_path)
    run.out.mkdir(exist_ok=True)
    sampling.from_prompts(run)
    steps = sum(cfg.inference_steps)  # every step of every A.0 run, the final step to the clean image included
    assert len(calls) == steps
    calls.clear()
    sampling.without_guidance(run)  # A.1.5 follows the course's plain DDPM step
    assert calls == []


def test_sdedit_rejects_an_i_start_past_the_schedule(mnist):
    with pytest.raises(ValueError, match="i_start"):
        pa.sdedit(mnist, torch.rand(1, 1, 28, 28), [10, 5, 0], 2, pa.conditional(mnist, mnist.embed(["1"])),
                  torch.Generator())


# ------------------------------------------------------------------ illusion scores

@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Font-rendered digits (2000 to train a small classifier for a few seconds, 600 held out) and the classifier."""
    from difflab.data.mnist import load_mnist
    from difflab.evaluation.classifier import ClassifierConfig, train_classifier

    root = write_fake_mnist(tmp_path_factory.mktemp("digits") / "MNIST" / "raw", 2000, 600, seed=1).parents[1]
    (x, y), (xt, yt) = load_mnist(root, True), load_mnist(root, False)
    model = train_classifier(x, y, ClassifierConfig(epochs=6, batch_size=32, device="cpu", precision="fp32"))
    return model, (x, y), (xt[:300], yt[:300]), (xt[300:], yt[300:])


@pytest.fixture(scope="module")
def judge(digits) -> Judge:
    """The judge as the stage builds it: the classifier taught NOT_A_DIGIT, realism fitted on real digits. Three
    epochs, as one epoch on 1,000 font digits leaves 2-4 % of held-out digits read as NOT_A_DIGIT, seed by seed."""
    model, (x, y), calibration, _ = digits
    return Judge(train_judge(model, x[:1000], y[:1000], seed=0, epochs=3), (x[1000:], y[1000:]), calibration,
                 lambda prompt: int(prompt[-1]))


@pytest.fixture(scope="module")
def scorer(judge) -> DigitScorer:
    return judge.scorer()


def _passes_any(scorer: DigitScorer, images: torch.Tensor) -> torch.Tensor:
    """Per image: does it count as any digit at all?"""
    return torch.stack([scorer.passes(images, d) for d in range(10)]).any(0)


def _classifier_reads(digits, images: torch.Tensor) -> torch.Tensor:
    from difflab.evaluation.classifier import predict

    return predict(digits[0], images).softmax(1)


def test_scorer_passes_real_digits(digits, scorer):
    *_, (x, y) = digits  # held out from both the fit and the calibration
    assert (_classifier_reads(digits, x).argmax(1) == y).float().mean() > 0.97
    assert (scorer.read(x)[0].argmax(1) == y).float().mean() > 0.97
    assert scorer.passes(x, y).float().mean() > 0.85  # about 95 % by construction, less the classifier's errors


def test_scorer_does_not_count_a_flipped_7_as_a_2(digits, scorer):
    *_, (x, y) = digits
    flipped = x[y == 7].flip(-2)
    fooled = (_classifier_reads(digits, flipped).argmax(1) == 2).sum()
    assert fooled > 0  # the classifier alone calls some upside-down 7s a 2 ...
    assert not scorer.passes(flipped, 2).any()  # ... but none looks like a real 2


def test_scorer_rejects_a_jigsaw_of_real_digit_patches(digits, scorer):
    *_, (x, _) = digits
    gen = torch.Generator().manual_seed(0)
    n, p = 100, 7  # 4 x 4 patches of 7 px, each from a random digit and a random place
    source = x[torch.randint(0, len(x), (n, 16), generator=gen)]
    jigsaw = torch.zeros(n, 1, 28, 28)
    for k in range(16):
        r, c = divmod(k, 4)
        pr, pc = torch.randint(0, 4, (2,), generator=gen).tolist()
        jigsaw[:, :, r * p:(r + 1) * p, c * p:(c + 1) * p] = source[:, k, :, pr * p:(pr + 1) * p, pc * p:(pc + 1) * p]
    assert jigsaw.amax(dim=(1, 2, 3)).min() > 0.5  # real strokes in every image
    assert not _passes_any(scorer, jigsaw).any()


def test_scorer_fails_blank_and_noise_images(digits, scorer):
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(50, 1, 28, 28, generator=gen)
    assert _classifier_reads(digits, noise).amax(1).median() > 0.5  # the classifier is confident about noise ...
    for images in (torch.zeros(4, 1, 28, 28), torch.ones(4, 1, 28, 28), noise):
        assert not _passes_any(scorer, images).any()  # ... the scorer is not


def test_scorer_alignment_and_concealment_follow_the_paper(digits, scorer):
    *_, (x, y) = digits
    ones, sevens = x[y == 1][:5], x[y == 7][:5]
    logp_1, logp_7 = scorer.read(ones)[0], scorer.read(sevens)[0]
    scores = score_views([(scorer, ones), (scorer, sevens)], [1, 7])
    # A = min over views of p(target | view); C = mean over views of p(target | view) renormalised over the targets
    torch.testing.assert_close(scores["alignment"], torch.minimum(logp_1[:, 1], logp_7[:, 7]).exp())
    own = torch.stack([logp_1[:, [1, 7]].softmax(1)[:, 0], logp_7[:, [1, 7]].softmax(1)[:, 1]], 1).mean(1)
    torch.testing.assert_close(scores["concealment"], own)
    assert scores["success"].float().mean() >= 0.6
    swapped = score_views([(scorer, ones), (scorer, sevens)], [7, 1])  # each view read as the other's digit
    assert not swapped["success"].any() and (swapped["alignment"] < scores["alignment"]).all()
    torch.testing.assert_close(swapped["concealment"], 1 - scores["concealment"])  # two views, two targets
    s = summary(scores)
    assert set(s) == {"success", "alignment", "concealment"} and set(s["alignment"]) == {"q10", "q50", "q90"}


def test_scorer_judge_learns_transformed_digits_as_not_a_digit_unless_they_still_show_one():
    from difflab.part_a.judge import NEGATIVE_VIEWS, NOT_A_DIGIT, judge_training_set
    from difflab.part_a.views import get_view

    x = torch.rand(90, 1, 28, 28)
    y = torch.arange(90) % 10
    # an upside-down 0, 1, 3 or 8 and a half-turned 6 or 9 are still digits; every other transform is not
    half_turn = {0: 0, 1: 1, 8: 8, 6: 9, 9: 6}
    still = {"flip": {0: 0, 1: 1, 3: 3, 8: 8}, "rotate_180": half_turn, "inner_circle": half_turn}
    data, labels = judge_training_set(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(data[:90], x) and torch.equal(labels[:90], y)  # the real digits, as they are
    k = 90 // len(NEGATIVE_VIEWS)
    for i, name in enumerate(NEGATIVE_VIEWS):
        block, block_labels = data[90 + i * k:90 + (i + 1) * k], labels[90 + i * k:90 + (i + 1) * k]
        for image, label in zip(block, block_labels):
            source = [j for j in range(90) if torch.equal(get_view(name).view(x[j:j + 1])[0], image)]
            assert len(source) == 1  # each negative is a real digit under the named view
            digit = int(y[source[0]])
            assert label == still.get(name, {}).get(digit, NOT_A_DIGIT), (name, digit)
    assert (labels[90 + len(NEGATIVE_VIEWS) * k:] == NOT_A_DIGIT).all()  # noise and blank images


def test_scorer_judges_hybrid_readings_against_filtered_real_digits(digits, judge):
    *_, (x, y) = digits
    low_scorer, high_scorer = judge.hybrid_scorers(7, 1.0)
    assert judge.hybrid_scorers(7, 1.0)[0] is low_scorer  # fitted once per filter
    assert low_scorer.passes(x, y).float().mean() > 0.8  # a real digit seen from afar (blurred) reads as itself
    assert high_scorer.passes(x, y).float().mean() > 0.8  # ... and up close (its high frequencies)
    noise = torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert not _passes_any(low_scorer, noise).any() and not _passes_any(high_scorer, noise).any()


HYBRID_SIGMA = 1.25  # the cut-off the pipeline's sweep chose on real MNIST (reports/metrics/part_a.json)


def _real_hybrids(digits, contrast: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """lowpass(A) + contrast * highpass(B) of held-out digits A != B, with the labels of A and of B."""
    *_, (x, y) = digits
    other = torch.roll(torch.arange(len(x)), 3)
    assert (y != y[other]).all()
    kernel = kernel_for(HYBRID_SIGMA)
    return lowpass(x, kernel, HYBRID_SIGMA) + contrast * highpass(x[other], kernel, HYBRID_SIGMA), y, y[other]


def test_scorer_passes_real_digit_hybrids_at_full_contrast(digits, judge):
    far, near = judge.hybrid_scorers(kernel_for(HYBRID_SIGMA), HYBRID_SIGMA)
    hybrids, low_digit, high_digit = _real_hybrids(digits, 1.0)
    assert near.passes(hybrids, high_digit).float().mean() > 0.8  # up close: B (90 %) ...
    assert near.passes(hybrids, low_digit).float().mean() < 0.02  # ... not A
    assert far.passes(hybrids, low_digit).float().mean() > 0.4  # from afar: A (56 %; a blurred A alone 76 %) ...
    assert far.passes(hybrids, high_digit).float().mean() < 0.1  # ... hardly ever B (3 %)


def test_scorer_fails_a_plain_digit_and_a_faint_high_band_up_close(digits, judge):
    *_, (x, _) = digits
    kernel = kernel_for(HYBRID_SIGMA)
    far, near = judge.hybrid_scorers(kernel, HYBRID_SIGMA)
    faint, low_digit, high_digit = _real_hybrids(digits, 0.1)
    assert far.passes(faint, low_digit).float().mean() > 0.5
    assert near.passes(faint, high_digit).float().mean() < 0.02  # B's strokes too faint to see
    for plain in (x, lowpass(x, kernel, HYBRID_SIGMA)):  # a digit A, sharp or blurred: no B to see up close
        assert not near.passes(plain, high_digit).any()
    # B's high band alone on gray: read at its real amplitude, not stretched to full contrast per image
    band = highpass(x[torch.roll(torch.arange(len(x)), 3)], kernel, HYBRID_SIGMA)
    assert near.passes(0.3 + band, high_digit).float().mean() > 0.8
    assert near.passes(0.3 + 0.1 * band, high_digit).float().mean() < 0.02
    # one scale for every image, fitted so that real digits' strokes peak where real digits do
    fit_digits = judge.fit_digits[0]
    torch.testing.assert_close(near.reading(fit_digits).amax(dim=(1, 2, 3)).median(),
                               fit_digits.amax(dim=(1, 2, 3)).median())
    torch.testing.assert_close(near.reading(band[:1]), near.reading(band)[:1])


# ------------------------------------------------------------------ user images

def test_user_images_skip_non_images_and_read_masks(tmp_path, caplog):
    from PIL import Image

    Image.new("L", (40, 40), 255).save(tmp_path / "sketch.png")
    Image.new("L", (40, 40), 0).save(tmp_path / "sketch.mask.png")
    Image.new("RGB", (30, 50), (0, 0, 0)).save(tmp_path / "photo.jpg")
    (tmp_path / "notes.md").write_text("not an image")
    (tmp_path / "README.txt").write_text("about this folder")
    with caplog.at_level(logging.WARNING):
        found = user_images(tmp_path, 28, 1, dark_background=True)
    assert [e.name for e in found] == ["photo", "sketch"]
    assert "notes.md" in caplog.text and "README" not in caplog.text
    assert found[0].mask is None and found[1].mask.shape == (1, 28, 28)
    assert found[1].image.max() < 1e-6  # white background inverted to MNIST's black


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ImageError, match="broken.png"):
        user_images(tmp_path, 28, 1, dark_background=True)


def test_mask_of_the_wrong_size_is_refused(tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "cat.png")
    Image.new("L", (32, 32)).save(tmp_path / "cat.mask.png")
    with pytest.raises(ImageError, match="cat.mask.png.*resize the mask"):
        user_images(tmp_path, 16, 3, dark_background=False)


# ------------------------------------------------------------------ whole runs

def _tiny_params(backbone: str) -> dict:
    params = load(TINY_PARAMS)
    params["device"], params["precision"] = "cpu", "fp32"
    params["part_a"]["backbone"] = backbone
    return params


def _check_outputs(out: Path, metrics: dict) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    sections = list(dict.fromkeys(m["section"] for m in manifest))
    assert sections == ["A.0", "A.1.1", "A.1.2", "A.1.3", "A.1.4", "A.1.5", "A.1.6", "A.1.7", "A.1.7.1", "A.1.7.2",
                        "A.1.7.3", "A.1.8", "A.1.9"]
    for entry in manifest:
        assert set(entry) == {"file", "title", "caption", "section"}
        assert (out / entry["file"]).stat().st_size > 0
    levels = {f"t{pa.noise_timestep(metrics['num_train_timesteps'], f)}" for f in (0.25, 0.5, 0.75)}
    assert set(metrics["denoise_psnr"]) == levels
    assert all(set(v) == {"blur", "one_step", "iterative"} for v in metrics["denoise_psnr"].values())
    return manifest


def test_part_a_runs_every_deliverable_on_mnist(tmp_path, monkeypatch):
    """The stages themselves, in a scratch repo: embed_prompts, then part_a with a stand-in classifier."""
    from difflab.evaluation.classifier import Classifier, save_classifier

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(TINY_PARAMS.read_text())
    write_fake_mnist(tmp_path / "data" / "mnist" / "MNIST" / "raw", 30, 30)
    save_tiny_class_ddpm(tmp_path / "models" / "class_ddpm.safetensors")
    save_classifier(tmp_path / "models" / "classifier.safetensors", Classifier())
    (tmp_path / "inputs" / "images").mkdir(parents=True)
    for stage in ("embed_prompts", "part_a"):
        runpy.run_path(str(REPO / "stages" / f"{stage}.py"), run_name="__main__")
    metrics = json.loads((tmp_path / "reports" / "metrics" / "part_a.json").read_text())
    _check_outputs(tmp_path / "reports" / "part_a", metrics)
    assert set(metrics["sdedit_psnr"]) == {"i1", "i5"}
    assert set(metrics["anagrams"]) == {"flip_7_1"} and set(metrics["hybrids"]) == {"0_8"}
    assert set(metrics["anagram_pairs"]) == {"flip"} and metrics["hybrid_sweep"]["sigmas"] == [0.875, 1.75]
    assert metrics["hybrid_filter"]["sigma"] == metrics["hybrid_sweep"]["best_sigma"]  # A.1.9 uses the measured best
    assert set(metrics["three_band"]) == {"0_8_1"}


def test_part_a_runs_every_deliverable_on_tiny_deepfloyd(tmp_path):
    params = _tiny_params("deepfloyd")
    params["part_a"]["deepfloyd"].update(zip(("stage1", "stage2"), tiny_if_repos()))
    backbone = get_backbone("deepfloyd", params, allow_cpu=True)
    cfg = PartAConfig.from_params(params)
    table = prompt_embeds.embed_all(backbone, cfg.prompts.all())
    images = part_a_images(params, "unused", tmp_path / "no-images", backbone.image_size)
    metrics = sections.run(PartA(backbone, table, cfg, images, tmp_path / "out"))
    _check_outputs(tmp_path / "out", metrics)
    assert "anagrams" not in metrics and "hybrid_sweep" not in metrics  # no classifier judges photos


def test_part_a_scores_illusions_beside_them(mnist, judge, tmp_path):
    params = _tiny_params("mnist")
    cfg = PartAConfig.from_params(params)
    table = prompt_embeds.embed_all(mnist, cfg.prompts.all())
    mnist_root = write_fake_mnist(tmp_path / "mnist" / "MNIST" / "raw", 30, 30).parents[1]
    images = part_a_images(params, mnist_root, tmp_path / "none", 28)
    metrics = sections.run(PartA(mnist, table, cfg, images, tmp_path / "out", judge))
    score = metrics["anagrams"]["flip_7_1"]
    assert set(score["alignment"]) == {"q10", "q50", "q90"}
    assert score["success"] == 0  # a random tiny UNet draws no digit, and the scorer says so
    assert metrics["hybrids"]["0_8"]["success"] == 0  # neither from afar nor up close
    assert all(rate == 0 for rates in metrics["hybrid_sweep"]["success"].values() for rate in rates)
    assert metrics["hybrid_sweep"]["any_pair_reaches_half"] is False
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    captions = {m["file"]: m["caption"] for m in manifest}
    assert "No setting reaches 50 % success" in captions["1_9_sigma_sweep.png"]
    close_up = judge.hybrid_scorers(metrics["hybrid_filter"]["kernel"], metrics["hybrid_filter"]["sigma"])[1]
    assert f"fitted on real digits ({close_up.reading.scale:.2f})" in captions["1_9_hybrids.png"]  # the gain scored
    assert "1_8_pair_matrix.png" in captions and "success rate" in captions["1_8_anagrams.png"]
    assert metrics["three_band"]["0_8_1"]["success"] == 0 and "1_9_three_band.png" in captions
