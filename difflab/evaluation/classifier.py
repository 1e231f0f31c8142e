"""A small MNIST CNN whose logits score intended-class accuracy and whose penultimate features feed the Fréchet
distance; trained deterministically in the pipeline and saved as safetensors."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save
from torch import nn

from difflab.pipeline.errors import CorruptFileError, read_weights, write_atomically
from difflab.pipeline.runtime import autocast, generator, resolve_device, seed_everything

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
FEATURES = 128
EVAL_BATCH = 1000


class Classifier(nn.Module):
    """conv32 -> conv64 -> fc128 -> 10; takes images in [0, 1] and normalizes them itself.

    Stride-2 convolutions instead of conv + max-pool: the same 28 -> 14 -> 7 maps at a quarter of the CPU time."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * 7 * 7, FEATURES), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, 10)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - MNIST_MEAN) / MNIST_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


@dataclass
class ClassifierConfig:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    max_shift: int = 1         # random translation of up to this many pixels per axis
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift]^2, filling with black."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=gen, device=gen.device).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]
    return padded[torch.arange(n, device=x.device)[:, None, None], 0, rows, cols].unsqueeze(1)


def train_classifier(x: torch.Tensor, y: torch.Tensor, cfg: ClassifierConfig) -> Classifier:
    """Adam with a cosine learning-rate decay over in-memory shuffled batches; deterministic given cfg.seed."""
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    gen = generator(device, cfg.seed)
    model = Classifier().to(device)
    steps_per_epoch = -(-len(x) // cfg.batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * steps_per_epoch)
    x, y = x.to(device), y.to(device)
    model.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=gen, device=device)
        for i in range(0, len(x), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            with autocast(device, cfg.precision):
                loss = F.cross_entropy(model(random_shift(x[idx], cfg.max_shift, gen)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.inference_mode()
def _batched(fn, model: nn.Module, images01: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.cat([fn(images01[i:i + EVAL_BATCH].to(device).float()).float().cpu()
                      for i in range(0, len(images01), EVAL_BATCH)])


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose arg-max logit is the label (the classifier stage's test accuracy, and intended-class
    accuracy of samples)."""
    return (logits.argmax(1) == labels).float().mean().item()


def predict(model: nn.Module, images01: torch.Tensor) -> torch.Tensor:
    """Logits N×10 (fp32, on the CPU) for images N×1×28×28 in [0, 1]."""
    return _batched(model, model, images01)


def features(model: nn.Module, images01: torch.Tensor) -> torch.Tensor:
    """Penultimate (fc128, post-ReLU) features N×128 (fp32, on the CPU) for images N×1×28×28 in [0, 1]."""
    return _batched(model.embed, model, images01)


def features_and_logits(model: nn.Module, images01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`features` and the logits computed from them (the same numbers as `predict`), in one pass over the images."""
    feats = features(model, images01)
    return feats, _batched(model.head, model, feats)


def save_classifier(path: str | Path, model: Classifier) -> None:
    """Write fp32 weights atomically (temp file + rename)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomically(path, save(state, metadata={"config": json.dumps({"kind": "mnist_classifier"})}))


def load_classifier(path: str | Path = "models/classifier.safetensors",
                    device: torch.device | str = "cpu") -> nn.Module:
    """The trained classifier in eval mode."""
    config, state = read_weights(path, "classifier", "classifier", "`dvc repro classifier`")
    kind = config.get("kind")
    if kind != "mnist_classifier":
        raise CorruptFileError(f"{path} holds a {kind!r}, not the MNIST classifier; restore it with "
                               f"`dvc checkout {path}`, or retrain it with `dvc repro classifier`")
    model = Classifier()
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CorruptFileError(f"classifier {path} is corrupt ({str(err)[:200]}); restore it with "
                               f"`dvc checkout {path}`, or retrain it with `dvc repro classifier`") from err
    return model.to(device).eval()