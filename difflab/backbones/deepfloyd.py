"""DeepFloyd IF as a Part A backbone: stage I (64x64 pixels) for the loops, stage II to upsample to 256x256,
T5 prompt embeddings. Needs a CUDA GPU and a Hugging Face login with the IF licence accepted."""
from __future__ import annotations

import importlib.util
from functools import cached_property

import torch

from difflab.backbones.base import Backbone
from difflab.core.schedule import NoiseSchedule
from difflab.pipeline.errors import DifflabError

MAX_PROMPT_TOKENS = 77  # IF's encode_prompt pads and truncates every prompt to 77 T5 tokens
HOW_TO_GET_IF = ("DeepFloyd IF is gated: accept its licence at https://huggingface.co/{id}, log in with "
                 "`hf auth login` (or set HF_TOKEN), or point part_a.deepfloyd.stage1/stage2 at local copies. "
                 "Without a GPU and Hugging Face access, run Part A on the offline backbone: part_a.backbone=mnist")


class DeepFloydUnavailable(DifflabError, RuntimeError):
    """IF cannot run here (no GPU, no licence/login, no network); the message says what to do."""


def _from_pretrained(load, model_id: str, **kwargs):
    """Call a from_pretrained loader, turning hub/offline/missing-file failures into DeepFloydUnavailable."""
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return load(model_id, **kwargs)
    except (OSError, ValueError, EntryNotFoundError) as err:
        raise DeepFloydUnavailable(f"could not load {model_id} ({type(err).__name__}: {err}). "
                                   + HOW_TO_GET_IF.format(id=model_id)) from err


class DeepFloydBackbone(Backbone):
    """IF stage I predicts 6 channels: eps (first 3) and a learned-range variance interpolation (last 3)."""

    name = "deepfloyd"
    channels = 3

    def __init__(self, stage1: str, stage2: str | None, device: torch.device, *, dtype: torch.dtype | None = None,
                 stage2_steps: int = 50, allow_cpu: bool = False):
        if device.type != "cuda" and not allow_cpu:
            raise DeepFloydUnavailable(
                "part_a.backbone=deepfloyd needs a CUDA GPU (stage I and II run in fp16 there) and "
                "none is available here. Run it on a GPU machine with `dvc exp run -S part_a.backbone=deepfloyd`, "
                "or keep part_a.backbone=mnist to run Part A offline on the CPU")
        self.stage1_id, self.stage2_id, self.device = stage1, stage2, device
        self.dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        self.stage2_steps = stage2_steps

    def _pipeline(self, model_id: str):
        from diffusers import DiffusionPipeline

        # The T5 encoder is loaded only by `embed`; the safety checker and watermarker are not used here.
        pipe = _from_pretrained(DiffusionPipeline.from_pretrained, model_id, text_encoder=None, safety_checker=None,
                                feature_extractor=None, watermarker=None, requires_safety_checker=False,
                                variant="fp16", dtype=self.dtype)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(self.device)

    @cached_property
    def stage1(self):
        return self._pipeline(self.stage1_id)

    @cached_property
    def stage2(self):
        return self._pipeline(self.stage2_id)

    @cached_property
    def schedule(self) -> NoiseSchedule:
        return NoiseSchedule.from_alphas_cumprod(self.stage1.scheduler.alphas_cumprod)

    @property
    def image_size(self) -> int:
        return self.stage1.unet.config.sample_size

    @torch.inference_mode()
    def embed(self, prompts: list[str]) -> torch.Tensor:
        """T5 encoder states (N, 77, d) exactly as IFPipeline.encode_prompt builds them (without caption cleaning)."""
        from transformers import AutoTokenizer, T5EncoderModel

        tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, self.stage1_id, subfolder="tokenizer")
        kwargs = self._text_encoder_kwargs()
        encoder = _from_pretrained(T5EncoderModel.from_pretrained, self.stage1_id, subfolder="text_encoder",
                                   variant="fp16", **kwargs)
        if "device_map" not in kwargs:  # a quantized model is placed by its device_map
            encoder = encoder.to(self.device)
        tokens = tokenizer([p.lower().strip() for p in prompts], padding="max_length", max_length=MAX_PROMPT_TOKENS,
                           truncation=True, add_special_tokens=True, return_tensors="pt")
        states = encoder(tokens.input_ids.to(self.device), attention_mask=tokens.attention_mask.to(self.device))[0]
        return states.float().cpu()

    def _text_encoder_kwargs(self) -> dict:
        """T5-XXL is ~10 GB in bf16: 8-bit on CUDA when bitsandbytes (with accelerate) is installed, else bf16/fp32."""
        if self.device.type == "cuda":
            if importlib.util.find_spec("bitsandbytes") and importlib.util.find_spec("accelerate"):
                from transformers import BitsAndBytesConfig

                return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True),
                        "device_map": {"": self.device.index or 0}}
            return {"dtype": torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32}
        return {"dtype": self.dtype}

    @torch.inference_mode()
    def predict(self, x_t: torch.Tensor, t: int, embeds: torch.Tensor,
                t_prev: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        unet, scheduler = self.stage1.unet, self.stage1.scheduler
        out = unet(x_t.to(self.device, self.dtype), t, encoder_hidden_states=embeds.to(self.device, self.dtype),
                   return_dict=False)[0].float()
        eps, predicted_variance = out.split(self.channels, dim=1)
        if t_prev is None:
            return eps, None
        # diffusers takes the step's beta from the previous timestep in its schedule, so give it the pair t -> t_prev
        # (as the course does with set_timesteps(strided_timesteps)); learned_range returns the log variance
        # frac * log(beta) + (1 - frac) * log(beta_tilde) with frac = (v + 1) / 2.
        scheduler.set_timesteps(timesteps=[t, t_prev])
        log_variance = scheduler._get_variance(t, predicted_variance=predicted_variance)
        return eps, torch.exp(log_variance)

    def threshold(self, x0: torch.Tensor) -> torch.Tensor:
        """What IF's DDPMScheduler.step does to x0: dynamic thresholding (Imagen: clip to the 95th percentile of
        |x0|, at least 1, at most 1.5, and rescale) when configured, else clipping to [-1, 1] when configured."""
        config, scheduler = self.stage1.scheduler.config, self.stage1.scheduler
        if config.thresholding:
            return scheduler._threshold_sample(x0)
        if config.clip_sample:
            return x0.clamp(-config.clip_sample_range, config.clip_sample_range)
        return x0

    @torch.inference_mode()
    def upsample(self, images01: torch.Tensor, embeds: torch.Tensor, uncond: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        """Stage II super-resolution (256x256 for IF-II) with the pipeline's own CFG over (embeds, uncond)."""
        if self.stage2_id is None:
            return images01
        out = self.stage2(image=self.encode(images01).to(self.device, self.dtype),
                          prompt_embeds=embeds.to(self.device, self.dtype),
                          negative_prompt_embeds=uncond.to(self.device, self.dtype),
                          num_inference_steps=self.stage2_steps, generator=generator, output_type="pt").images
        return self.decode(out.float()).cpu()


def from_params(params: dict, *, allow_cpu: bool = False) -> DeepFloydBackbone:
    """The IF backbone of validated params (device, part_a.deepfloyd); its models load when first used."""
    from difflab.pipeline.runtime import resolve_device

    cfg = params["part_a"]["deepfloyd"]
    return DeepFloydBackbone(cfg["stage1"], cfg["stage2"] if cfg["upsample"] else None,
                             resolve_device(params["device"]), stage2_steps=cfg["stage2_steps"], allow_cpu=allow_cpu)
