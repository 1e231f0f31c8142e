"""The prompt -> embedding table Part A reads (like the course's prompt_embeds_dict.pth), saved by embed_prompts."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from difflab.backbones import Backbone


def embed_all(backbone: Backbone, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """prompt -> its embedding with a leading batch dim of 1 (e.g. (1, 77, 4096) for IF, (1, 10) for MNIST)."""
    rows = backbone.embed(list(prompts))
    return {p: rows[i:i + 1].float().cpu().contiguous() for i, p in enumerate(prompts)}


def save(path: str | Path, table: dict[str, torch.Tensor]) -> None:
    """torch.save in sorted prompt order, which writes the same bytes for the same table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(sorted(table.items())), path)


def load(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `dvc repro embed_prompts`")
    return torch.load(path, map_location="cpu", weights_only=True)


def lookup(table: dict[str, torch.Tensor], prompts: Sequence[str]) -> torch.Tensor:
    """Stack the stored embeddings of prompts, one row per prompt."""
    missing = sorted({p for p in prompts if p not in table})
    if missing:
        raise KeyError(f"no embedding for prompt(s) {missing}; run `dvc repro embed_prompts` after changing prompts")
    return torch.cat([table[p] for p in prompts])
