"""Tiny models for the Part A tests: DeepFloyd IF stage I / II repos (UNets, T5, tokenizer, schedulers) saved the
way the hub lays them out, so the deepfloyd backbone's real loading code runs offline; a tiny class_ddpm; a fake
MNIST test split."""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

WORDS = ["a", "an", "photo", "of", "the", "high", "quality", "rocket", "ship", "skull", "dog", "man", "painting",
         "oil", "old", "campfire", "people", "waterfalls", "lithograph", "hat", "village", "snowy", "mountain",
         "around", "wearing", "handwritten", "7", "3"]
T5_DIM = 8
STAGE1_SIZE, STAGE2_SIZE = 16, 32


def _tokenizer():
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in WORDS]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _text_encoder():
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=len(WORDS) + 3, d_model=T5_DIM, d_kv=4, d_ff=16, num_layers=1, num_heads=2,
                      relative_attention_num_buckets=8)
    return T5EncoderModel(config)


def _unet(in_channels: int, size: int, class_embed: str | None):
    from diffusers import UNet2DConditionModel

    # IF-like: simple cross-attention blocks, text projection of the T5 states, 6 output channels (eps + variance)
    return UNet2DConditionModel(
        sample_size=size, in_channels=in_channels, out_channels=6, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=8, cross_attention_dim=16,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", encoder_hid_dim=T5_DIM, encoder_hid_dim_type="text_proj",
        addition_embed_type="text", addition_embed_type_num_heads=2, resnet_time_scale_shift="scale_shift",
        class_embed_type=class_embed, act_fn="gelu")


def _scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="learned_range",
                         thresholding=True, dynamic_thresholding_ratio=0.95, sample_max_value=1.5,
                         clip_sample=True, prediction_type="epsilon")


def save_tiny_if(root: Path) -> tuple[str, str]:
    """Write tiny stage I and stage II repos under root (fp32 weights under IF's "fp16" variant names)."""
    from diffusers import DDPMScheduler, IFPipeline, IFSuperResolutionPipeline

    torch.manual_seed(0)
    stage1, stage2 = root / "IF-I-tiny", root / "IF-II-tiny"
    common = dict(tokenizer=_tokenizer(), text_encoder=_text_encoder(), scheduler=_scheduler(), safety_checker=None,
                  feature_extractor=None, watermarker=None, requires_safety_checker=False)
    IFPipeline(unet=_unet(3, STAGE1_SIZE, None), **common).save_pretrained(stage1, variant="fp16")
    noising = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    IFSuperResolutionPipeline(unet=_unet(6, STAGE2_SIZE, "timestep"), image_noising_scheduler=noising,
                              **common).save_pretrained(stage2, variant="fp16")
    return str(stage1), str(stage2)


@functools.cache
def tiny_if_repos() -> tuple[str, str]:
    """One pair of tiny IF repos per test session (saving them takes seconds), removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="difflab-tiny-if-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return save_tiny_if(root)


def save_tiny_class_ddpm(path: Path, prediction: str = "eps") -> Path:
    """A randomly initialised class-conditioned UNet of width 4 (an eps- or v-model), saved like train@class_ddpm
    saves its model."""
    from difflab.core.families import build_model
    from difflab.core.weights import save_model

    torch.manual_seed(0)
    save_model(path, build_model("class_ddpm", 4, prediction), "class_ddpm")
    return path


def tiny_mnist_backbone(directory: Path, num_ts: int, prediction: str = "eps", zero_terminal_snr: bool = False):
    """The mnist backbone on a tiny random class_ddpm saved in `directory`, on the CPU in fp32."""
    from difflab.backbones.mnist import MnistBackbone
    from difflab.core.schedule import NoiseSchedule

    path = save_tiny_class_ddpm(directory / "class_ddpm.safetensors", prediction)
    schedule = NoiseSchedule.linear(num_ts, zero_terminal_snr=zero_terminal_snr)
    return MnistBackbone(path, schedule, torch.device("cpu"), precision="fp32")


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    """Tiny tensors gain nothing from a second thread, and on a shared 2-core machine OpenMP threads waiting for
    each other make these tests 5-20x slower; restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def use_sentencepiece_tokenizer(repo: Path) -> None:
    """Replace repo/tokenizer with the hub's IF layout: a SentencePiece spiece.model and a slow-tokenizer config."""
    import json

    import sentencepiece

    tok = repo / "tokenizer"
    shutil.rmtree(tok)
    tok.mkdir()
    corpus = tok / "corpus.txt"
    corpus.write_text("\n".join(" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))))
    sentencepiece.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tok / "spiece"), vocab_size=len(WORDS),
                                             model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                             minloglevel=2)
    corpus.unlink()
    (tok / "spiece.vocab").unlink()
    (tok / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0,
                                                           "model_max_length": 512}))
