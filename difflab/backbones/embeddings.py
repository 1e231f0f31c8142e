"""The prompt -> embedding table Part A reads (like the course's prompt_embeds_dict.pth), saved by embed_prompts."""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Sequence

import torch

from difflab.backbones.encoders import Encoder
from difflab.pipeline.errors import CorruptFileError, DifflabError, MissingFileError, write_atomically


class PromptError(DifflabError, KeyError):
    """A prompt with no stored embedding: the table is older than params.yaml's prompts."""


def embed_all(backbone: Encoder, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """prompt -> its embedding with a leading batch dim of 1 (e.g. (1, 77, 4096) for IF, (1, 10) for MNIST)."""
    rows = backbone.embed(list(prompts))
    return {p: rows[i:i + 1].float().cpu().contiguous() for i, p in enumerate(prompts)}


def write_table(path: str | Path, table: dict[str, torch.Tensor]) -> None:
    """torch.save in sorted prompt order, which writes the same bytes for the same table; atomically."""
    buffer = io.BytesIO()
    torch.save(dict(sorted(table.items())), buffer)
    write_atomically(path, buffer.getvalue())


def load(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} is missing; restore it with `dvc checkout {path}` or make it with "
                               "`dvc repro embed_prompts`")
    try:
        table = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, EOFError, OSError, pickle.UnpicklingError) as err:
        raise CorruptFileError(f"{path} is corrupt ({type(err).__name__}: {str(err)[:200]}); restore it with "
                               f"`dvc checkout {path}` or rebuild it with `dvc repro -f embed_prompts`") from err
    if not isinstance(table, dict):
        raise CorruptFileError(f"{path} holds a {type(table).__name__}, not a prompt table; rebuild it with "
                               "`dvc repro -f embed_prompts`")
    return table


def lookup(table: dict[str, torch.Tensor], prompts: Sequence[str]) -> torch.Tensor:
    """Stack the stored embeddings of prompts, one row per prompt."""
    missing = sorted({p for p in prompts if p not in table})
    if missing:
        raise PromptError(f"no embedding for prompt(s) {missing}; run `dvc repro embed_prompts` after changing prompts")
    return torch.cat([table[p] for p in prompts])
