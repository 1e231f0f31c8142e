"""Both Part A backbones, offline: the MNIST class_ddpm on a tiny random UNet, DeepFloyd IF on tiny random stage I/II
repos loaded through the backbone's own from_pretrained code; the sampling step against diffusers' DDPMScheduler."""
import shutil

import pytest
import torch
from diffusers import DDPMScheduler
from part_a_fixtures import (
    STAGE1_SIZE,
    STAGE2_SIZE,
    T5_DIM,
    one_cpu_thread,  # noqa: F401  (autouse)
    save_tiny_class_ddpm,
    tiny_if_repos,
    tiny_mnist_backbone,
    use_sentencepiece_tokenizer,
)

from difflab.backbones import embeddings as prompt_embeds
from difflab.backbones.registry import get_backbone
from difflab.backbones.deepfloyd import DeepFloydBackbone, DeepFloydUnavailable
from difflab.backbones.mnist import MnistBackbone
from difflab.core.reverse import ancestral_step, posterior_variance, x0_from_eps
from difflab.pipeline.digit_prompts import parse_prompt
from difflab.core.schedule import NoiseSchedule
from difflab.part_a import loops as pa

pytestmark = pytest.mark.unit

CPU = torch.device("cpu")
T = 30


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> MnistBackbone:
    return tiny_mnist_backbone(tmp_path_factory.mktemp("mnist"), T)


@pytest.fixture(scope="module")
def deepfloyd() -> DeepFloydBackbone:
    stage1, stage2 = tiny_if_repos()
    return DeepFloydBackbone(stage1, stage2, CPU, stage2_steps=2, allow_cpu=True)


# ------------------------------------------------------------------ MNIST

@pytest.mark.parametrize("prompt,digit", [("7", 7), ("seven", 7), ("a handwritten 7", 7), ("A Handwritten Seven", 7),
                                          ("  0 ", 0), ("a handwritten   nine", 9), ("", None), ("   ", None)])
def test_mnist_prompts_name_digits(prompt, digit):
    assert parse_prompt(prompt) == digit


@pytest.mark.parametrize("prompt", ["a dog", "77", "a handwritten", "handwritten 7", "-1"])
def test_unknown_mnist_prompt_lists_the_accepted_forms(prompt):
    with pytest.raises(ValueError, match="a handwritten seven") as err:
        parse_prompt(prompt)
    assert repr(prompt) in str(err.value)


def test_mnist_embeddings_are_one_hot_and_empty_is_unconditional(mnist):
    e = mnist.embed(["3", "", "a handwritten nine"])
    assert e.shape == (3, 10)
    assert e[0].argmax() == 3 and e[0].sum() == 1 and e[1].sum() == 0 and e[2].argmax() == 9


def test_mnist_predict_feeds_the_ddpm_time_input(mnist):
    x, c = torch.randn(2, 1, 28, 28), mnist.embed(["1", ""])
    eps, var = mnist.predict(x, 4, c)
    assert eps.shape == x.shape and var is None
    with torch.inference_mode():
        expected = mnist.model(x, torch.full((2,), 5 / T), c)  # t = 4: the UNet sees (t + 1) / T
    torch.testing.assert_close(eps, expected)
    _, var = mnist.predict(x, 4, c, t_prev=1)
    assert var.shape == x.shape
    torch.testing.assert_close(var[0, 0, 0, 0], posterior_variance(mnist.schedule, 4, 1, x))


def test_mnist_backbone_hands_the_loops_eps_from_a_v_model(tmp_path):
    """A v-model (its file says so) on a zero-terminal-SNR schedule: predict returns
    eps = sqrt(abar_t) v + sqrt(1 - abar_t) x_t, the eps Part A's loops expect; x0 from that eps is the v-model's own
    sqrt(abar_t) x_t - sqrt(1 - abar_t) v. At t = T - 1 (abar = 0) eps = x_t holds no x0, and the loops say so."""
    from difflab.core.reverse import predicted_x0

    v_backbone = tiny_mnist_backbone(tmp_path, T, prediction="v", zero_terminal_snr=True)
    assert v_backbone.model.prediction == "v" and v_backbone.schedule.alphas_cumprod[-1] == 0
    x, c = torch.randn(2, 1, 28, 28), v_backbone.embed(["1", ""])
    for t in (0, 12, T - 2, T - 1):
        eps, _ = v_backbone.predict(x, t, c)
        with torch.inference_mode():
            v = v_backbone.model(x, torch.full((2,), (t + 1) / T), c)
        abar = v_backbone.schedule.alphas_cumprod[t]
        torch.testing.assert_close(eps, abar.sqrt() * v + (1 - abar).sqrt() * x)
        if t < T - 1:
            torch.testing.assert_close(x0_from_eps(v_backbone.schedule, x, t, eps),
                                       predicted_x0(v_backbone.schedule, x, t, v, "v"), rtol=1e-4, atol=1e-4)
    assert torch.equal(v_backbone.predict(x, T - 1, c)[0], x)
    ts = pa.strided_timesteps(T, 1)
    out = pa.sample(v_backbone, 2, ts[1:], pa.conditional(v_backbone, c), torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="abar_t = 0"):
        pa.sample(v_backbone, 2, ts, pa.conditional(v_backbone, c), torch.Generator().manual_seed(0))


def test_mnist_schedule_is_diffusers_convention(mnist):
    ours = mnist.schedule.alphas_cumprod
    betas = mnist.schedule.betas.double().numpy()
    theirs = DDPMScheduler(num_train_timesteps=T, trained_betas=betas).alphas_cumprod
    assert len(ours) == T == mnist.num_train_timesteps
    torch.testing.assert_close(ours, theirs.float())


def test_cfg_is_one_batched_forward(mnist, monkeypatch):
    calls = []
    predict = mnist.predict
    monkeypatch.setattr(mnist, "predict", lambda x, *a, **k: calls.append(len(x)) or predict(x, *a, **k))
    fn = pa.cfg_noise(mnist, mnist.embed(["3", "4"]), mnist.embed(["", ""]), 7.0)
    x = torch.randn(2, 1, 28, 28)
    eps, var = fn(x, 10, 5)
    assert calls == [4] and eps.shape == x.shape and var.shape == x.shape
    eps_c, _ = predict(x, 10, mnist.embed(["3", "4"]))
    eps_u, _ = predict(x, 10, mnist.embed(["", ""]))
    torch.testing.assert_close(eps, eps_u + 7.0 * (eps_c - eps_u))


def _compare_with_scheduler(backbone, scheduler, raw_output, embeds, x, timesteps):
    """One manual strided step against DDPMScheduler.step for the same model output and the same noise."""
    t, t_prev = timesteps[1], timesteps[2]
    scheduler.set_timesteps(timesteps=timesteps)
    theirs = scheduler.step(raw_output, t, x, generator=torch.Generator().manual_seed(3)).prev_sample
    eps, var = backbone.predict(x, t, embeds, t_prev)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    ours = ancestral_step(backbone.schedule, x, t, t_prev, x0_from_eps(backbone.schedule, x, t, eps), noise, var)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_mnist_step_matches_diffusers(mnist):
    x, c = torch.randn(2, 1, 28, 28), mnist.embed(["2", "8"])
    scheduler = DDPMScheduler(num_train_timesteps=T, trained_betas=mnist.schedule.betas.double().numpy(),
                              variance_type="fixed_small", clip_sample=False, thresholding=False)
    eps, _ = mnist.predict(x, 20, c)
    _compare_with_scheduler(mnist, scheduler, eps, c, x, pa.strided_timesteps(T, 5)[1:])  # 25, 20, 15, ...


def test_get_backbone_builds_from_params(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_tiny_class_ddpm(tmp_path / "models" / "class_ddpm.safetensors")
    params = {"device": "cpu", "precision": "fp32", "ddpm": {"num_ts": T, "beta1": 1e-4, "beta2": 0.02}}
    backbone = get_backbone("mnist", params)
    assert backbone.image_size == 28 and backbone.channels == 1 and backbone.num_train_timesteps == T
    with pytest.raises(ValueError, match="mnist, deepfloyd"):
        get_backbone("deepfloy", params)


def test_mnist_backbone_refuses_another_model_kind(tmp_path):
    from difflab.core.families import build_model
    from difflab.core.weights import save_model

    save_model(tmp_path / "m.safetensors", build_model("time_ddpm", 4), "time_ddpm")
    with pytest.raises(ValueError, match="needs the class_ddpm"):
        MnistBackbone(tmp_path / "m.safetensors", NoiseSchedule.linear(T), CPU).predict(
            torch.zeros(1, 1, 28, 28), 0, torch.zeros(1, 10))


# ------------------------------------------------------------------ DeepFloyd IF (tiny)

def test_deepfloyd_embeds_like_the_course(deepfloyd):
    table = prompt_embeds.embed_all(deepfloyd, ["", "a rocket ship", "a high quality photo"])
    assert set(table) == {"", "a rocket ship", "a high quality photo"}
    assert all(e.shape == (1, 77, T5_DIM) for e in table.values())
    assert not torch.equal(table[""], table["a rocket ship"])


def test_deepfloyd_reads_the_hubs_sentencepiece_tokenizer(tmp_path):
    """The hub's IF repos ship only tokenizer/spiece.model; transformers converts it with protobuf."""
    pytest.importorskip("google.protobuf", reason="converting spiece.model needs protobuf (see requirements.txt)")
    repo = tmp_path / "IF-I-spm"
    shutil.copytree(tiny_if_repos()[0], repo)
    use_sentencepiece_tokenizer(repo)
    e = DeepFloydBackbone(str(repo), None, CPU, allow_cpu=True).embed(["a photo of a dog", ""])
    assert e.shape == (2, 77, T5_DIM) and not torch.equal(e[0], e[1])


def test_prompt_table_round_trips_byte_for_byte(deepfloyd, tmp_path):
    table = prompt_embeds.embed_all(deepfloyd, ["", "a dog"])
    prompt_embeds.write_table(tmp_path / "a" / "embeds.pt", table)
    prompt_embeds.write_table(tmp_path / "b" / "embeds.pt", dict(reversed(list(table.items()))))
    assert (tmp_path / "a" / "embeds.pt").read_bytes() == (tmp_path / "b" / "embeds.pt").read_bytes()
    loaded = prompt_embeds.load(tmp_path / "a" / "embeds.pt")
    torch.testing.assert_close(prompt_embeds.lookup(loaded, ["a dog", ""]), torch.cat([table["a dog"], table[""]]))
    with pytest.raises(KeyError, match="dvc repro embed_prompts"):
        prompt_embeds.lookup(loaded, ["a cat"])


def test_deepfloyd_predicts_noise_and_learned_variance(deepfloyd):
    e = deepfloyd.embed(["a dog", ""])
    x = torch.randn(2, 3, STAGE1_SIZE, STAGE1_SIZE)
    assert deepfloyd.image_size == STAGE1_SIZE and deepfloyd.num_train_timesteps == 1000
    eps, var = deepfloyd.predict(x, 990, e)
    assert eps.shape == x.shape and var is None
    eps, var = deepfloyd.predict(x, 990, e, 960)
    assert var.shape == x.shape and (var > 0).all()
    # learned range: between beta_tilde and beta of the strided step
    beta_tilde = posterior_variance(deepfloyd.schedule, 990, 960, x)
    abar = deepfloyd.schedule.alphas_cumprod
    beta = 1 - abar[990] / abar[960]
    assert (var >= beta_tilde * 0.999).all() and (var <= beta * 1.001).all()


def test_deepfloyd_step_matches_diffusers(deepfloyd):
    e = deepfloyd.embed(["a dog"])
    x = torch.randn(1, 3, STAGE1_SIZE, STAGE1_SIZE)
    scheduler = DDPMScheduler.from_config(deepfloyd.stage1.scheduler.config, thresholding=False, clip_sample=False)
    with torch.inference_mode():
        raw = deepfloyd.stage1.unet(x, 960, encoder_hidden_states=e, return_dict=False)[0]
    _compare_with_scheduler(deepfloyd, scheduler, raw, e, x, pa.strided_timesteps(1000, 30))  # 990, 960, 930...


def test_deepfloyd_stage2_upsamples(deepfloyd):
    e = deepfloyd.embed(["a dog", ""])
    up = deepfloyd.upsample(torch.rand(1, 3, STAGE1_SIZE, STAGE1_SIZE), e[:1], e[1:], torch.Generator().manual_seed(0))
    assert up.shape == (1, 3, STAGE2_SIZE, STAGE2_SIZE) and 0 <= up.min() and up.max() <= 1


def test_deepfloyd_without_gpu_says_what_to_do():
    with pytest.raises(DeepFloydUnavailable, match="CUDA GPU.*part_a.backbone=mnist"):
        DeepFloydBackbone("DeepFloyd/IF-I-L-v1.0", None, CPU)


def test_deepfloyd_without_access_says_how_to_get_it(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", "/nonexistent-difflab-hf-home")
    backbone = DeepFloydBackbone("DeepFloyd/IF-I-L-v1.0", None, CPU, allow_cpu=True)
    with pytest.raises(DeepFloydUnavailable, match="accept its licence.*hf auth login"):
        backbone.image_size
    with pytest.raises(DeepFloydUnavailable, match="IF-I-L-v1.0"):
        backbone.embed(["a dog"])


# ------------------------------------------------------------------ our loops against diffusers' IF pipelines

def _if_pipeline(cls, repo: str, **scheduler_overrides):
    """A diffusers IF pipeline loaded from a tiny repo, optionally with its scheduler's settings changed."""
    pipe = cls.from_pretrained(repo, text_encoder=None, safety_checker=None, feature_extractor=None, watermarker=None,
                               requires_safety_checker=False, variant="fp16")
    if scheduler_overrides:
        pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config, **scheduler_overrides)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("thresholding", [False, True])
def test_ifpipeline_stage1_equals_our_iterative_cfg_loop(deepfloyd, thresholding):
    """Full timestep list, i_start = 0, the same generator and guidance: our loop is IFPipeline, to fp32 tolerance.
    Without thresholding, both sides skip every x0 post-processing (the pipeline's scheduler neither thresholds nor
    clips); with it, our loop applies the backbone's `threshold` and the pipeline its own configuration."""
    from diffusers import IFPipeline

    overrides = {} if thresholding else {"thresholding": False, "clip_sample": False}
    pipe = _if_pipeline(IFPipeline, tiny_if_repos()[0], **overrides)
    assert pipe.scheduler.config.thresholding == thresholding
    cond, uncond = deepfloyd.embed(["a photo of a dog"]), deepfloyd.embed([""])
    steps, scale = 8, 4.0
    with torch.inference_mode():
        theirs = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, num_inference_steps=steps,
                      guidance_scale=scale, generator=torch.Generator().manual_seed(3), output_type="pt").images
    ours = pa.sample(deepfloyd, 1, pa.inference_timesteps(1000, steps), pa.cfg_noise(deepfloyd, cond, uncond, scale),
                     torch.Generator().manual_seed(3), to_clean=True,
                     clean=deepfloyd.threshold if thresholding else None)
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-4, atol=1e-4)
    other = pa.sample(deepfloyd, 1, pa.inference_timesteps(1000, steps), pa.cfg_noise(deepfloyd, cond, uncond, scale),
                      torch.Generator().manual_seed(4), to_clean=True)
    assert (other - theirs).abs().max() > 1e-2  # the comparison can fail: another seed is another image


def test_ifpipeline_thresholding_changes_the_image(deepfloyd):
    """The opt-in thresholding is not a no-op on the tiny model, so the test above checks something."""
    cond, uncond = deepfloyd.embed(["a photo of a dog"]), deepfloyd.embed([""])
    ts = pa.inference_timesteps(1000, 8)
    run = [pa.sample(deepfloyd, 1, ts, pa.cfg_noise(deepfloyd, cond, uncond, 4.0), torch.Generator().manual_seed(3),
                     to_clean=True, clean=clean) for clean in (None, deepfloyd.threshold)]
    assert (run[0] - run[1]).abs().max() > 1e-3


def test_ifpipeline_super_resolution_equals_our_stage2_call(deepfloyd):
    from diffusers import IFSuperResolutionPipeline

    pipe = _if_pipeline(IFSuperResolutionPipeline, tiny_if_repos()[1])
    cond, uncond = deepfloyd.embed(["a photo of a dog"]), deepfloyd.embed([""])
    images01 = torch.rand(1, 3, STAGE1_SIZE, STAGE1_SIZE, generator=torch.Generator().manual_seed(0))
    ours = deepfloyd.upsample(images01, cond, uncond, torch.Generator().manual_seed(5))
    with torch.inference_mode():
        theirs = pipe(image=images01 * 2 - 1, prompt_embeds=cond, negative_prompt_embeds=uncond,
                      num_inference_steps=deepfloyd.stage2_steps, generator=torch.Generator().manual_seed(5),
                      output_type="pt").images
    torch.testing.assert_close(ours, ((theirs.float() + 1) / 2).clamp(0, 1), rtol=1e-4, atol=1e-4)
