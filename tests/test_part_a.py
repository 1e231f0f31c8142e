"""Part A's loops and deliverables: timestep schedules, the guidance variants, inpainting, user images, illusion
scores, and whole runs on a tiny MNIST backbone and a tiny DeepFloyd IF."""
import json
import logging
import runpy
from pathlib import Path

import pytest
import torch
from part_a_fixtures import one_cpu_thread  # noqa: F401  (autouse)
from conftest import write_fake_mnist
from part_a_fixtures import save_tiny_class_ddpm, tiny_if_repos, tiny_mnist_backbone

from difflab import part_a as pa
from difflab import prompt_embeds
from difflab.backbones import get_backbone
from difflab.backbones.mnist import MnistBackbone
from difflab.data import ImageError
from difflab.filters import lowpass
from difflab.illusions import anagram_success, high_frequencies, hybrid_success
from difflab.params import load
from difflab.part_a_config import PartAConfig
from difflab.part_a_deliverables import Judge, PartA
from difflab.part_a_inputs import part_a_images, user_images
from difflab.schedule import DDPMSchedule
from difflab.views import FlipView, View

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
])
def test_bad_part_a_params_say_what_is_allowed(key, value, message):
    from difflab.params import ParamsError, validate

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
    x_t = pa.forward(mnist, x0, 15, noise)
    torch.testing.assert_close(pa.one_step_denoise(mnist, x_t, 15, lambda x, t, tp: (noise, None)), x0,
                               rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ guidance variants

def test_anagram_and_hybrid_reduce_to_cfg(mnist):
    x, c, u = torch.randn(1, 1, 28, 28), mnist.embed(["4"]), mnist.embed([""])
    cfg_eps, cfg_var = pa.guided(mnist, c, u, 5.0)(x, 10, 8)
    ana_eps, ana_var = pa.anagram(mnist, [View(), View()], [c, c], u, 5.0)(x, 10, 8)
    hyb_eps, _ = pa.hybrid(mnist, c, c, u, 5.0, 15, 0.875)(x, 10, 8)
    torch.testing.assert_close(ana_eps, cfg_eps)
    torch.testing.assert_close(ana_var, cfg_var)
    torch.testing.assert_close(hyb_eps, cfg_eps, rtol=1e-5, atol=1e-5)


def test_anagram_averages_the_flipped_estimate(mnist):
    x, c1, c2, u = torch.randn(1, 1, 28, 28), mnist.embed(["7"]), mnist.embed(["1"]), mnist.embed([""])
    eps, _ = pa.anagram(mnist, [View(), FlipView()], [c1, c2], u, 3.0)(x, 10, None)
    e1, _ = pa.guided(mnist, c1, u, 3.0)(x, 10, None)
    e2, _ = pa.guided(mnist, c2, u, 3.0)(x.flip(-2), 10, None)
    torch.testing.assert_close(eps, (e1 + e2.flip(-2)) / 2)


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


def test_sdedit_rejects_an_i_start_past_the_schedule(mnist):
    with pytest.raises(ValueError, match="i_start"):
        pa.sdedit(mnist, torch.rand(1, 1, 28, 28), [10, 5, 0], 2, pa.conditional(mnist, mnist.embed(["1"])),
                  torch.Generator())


# ------------------------------------------------------------------ illusion scores

def test_illusion_scores_use_the_classify_callable():
    dark, bright = torch.zeros(4, 1, 28, 28), torch.full((4, 1, 28, 28), 0.2)
    assert anagram_success(dark, bright, (0, 8), stand_in_classifier) == 1.0
    assert anagram_success(dark, dark, (0, 8), stand_in_classifier) == 0.0
    stripes = torch.zeros(2, 1, 28, 28)
    stripes[..., ::2, :] = 0.1
    hp = high_frequencies(stripes, 15, 0.875)
    assert hp.amax() == 1.0 and hp.amin() == 0.0  # bright strokes on black, like an MNIST digit
    low, high = (int(stand_in_classifier(x)[0]) for x in (lowpass(stripes, 15, 0.875), hp))
    assert low != high
    assert hybrid_success(stripes, (low, high), stand_in_classifier, 15, 0.875) == 1.0
    assert hybrid_success(stripes, (high, low), stand_in_classifier, 15, 0.875) == 0.0


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
    sections = [m["section"] for m in manifest]
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
    from difflab.classifier import Classifier, save_classifier

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
    assert set(metrics["anagram_success"]) == {"flip_7_1"} and set(metrics["hybrid_success"]) == {"0_8"}


def test_part_a_runs_every_deliverable_on_tiny_deepfloyd(tmp_path):
    params = _tiny_params("deepfloyd")
    params["part_a"]["deepfloyd"].update(zip(("stage1", "stage2"), tiny_if_repos()))
    backbone = get_backbone("deepfloyd", params, allow_cpu=True)
    cfg = PartAConfig.from_params(params)
    table = prompt_embeds.embed_all(backbone, cfg.prompts.all())
    images = part_a_images(params, "unused", tmp_path / "no-images", backbone.image_size)
    metrics = PartA(backbone, table, cfg, images, tmp_path / "out").run()
    _check_outputs(tmp_path / "out", metrics)
    assert "anagram_success" not in metrics  # no classifier judges photos


def test_part_a_judges_illusions_with_a_stand_in(mnist, tmp_path):
    params = _tiny_params("mnist")
    cfg = PartAConfig.from_params(params)
    table = prompt_embeds.embed_all(mnist, cfg.prompts.all())
    mnist_root = write_fake_mnist(tmp_path / "mnist" / "MNIST" / "raw", 30, 30).parents[1]
    images = part_a_images(params, mnist_root, tmp_path / "none", 28)
    judge = Judge(stand_in_classifier, lambda prompt: int(prompt[-1]))
    metrics = PartA(mnist, table, cfg, images, tmp_path / "out", judge).run()
    assert 0 <= metrics["anagram_success"]["flip_7_1"] <= 1 and 0 <= metrics["hybrid_success"]["0_8"] <= 1
