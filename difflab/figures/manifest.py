"""manifest.json: the list of figures a stage wrote into its out dir, with what the report says about each."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from difflab.pipeline.errors import DifflabError, write_atomically

NAME = "manifest.json"


@dataclass(frozen=True)
class Figure:
    file: str      # relative to the manifest's directory
    title: str
    caption: str   # what the reader sees, and the params that made it
    section: str   # course section id, e.g. "A.1.4" or "B.2.6"


class ManifestError(DifflabError, ValueError):
    """A manifest that lists unwritten files or cannot be read; the message names the stage to re-run."""


def write(directory: str | Path, figures: list[Figure]) -> Path:
    """Write <directory>/manifest.json; every listed file must already exist there."""
    directory = Path(directory)
    missing = [f.file for f in figures if not (directory / f.file).is_file()]
    if missing:
        raise ManifestError(f"{directory}: manifest lists files that were not written: {', '.join(missing)}")
    path = directory / NAME
    write_atomically(path, json.dumps([asdict(f) for f in figures], indent=2, ensure_ascii=False) + "\n")
    return path


def read(directory: str | Path) -> list[Figure]:
    """The figures in <directory>/manifest.json ([] when there is none)."""
    path = Path(directory) / NAME
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())
        return [Figure(**{k: str(e[k]) for k in ("file", "title", "caption", "section")}) for e in entries]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ManifestError(f"{path}: not a list of {{file, title, caption, section}} entries ({err}); "
                            "re-run the stage that wrote it") from err


def describe_training(m: dict) -> str:
    """One phrase naming the training params of a `models.<name>` entry, for captions (`train_subset` 0 = all
    60,000 digits)."""
    epochs = m["epochs"]
    # ExponentialLR steps after each epoch (a one-epoch run trains at a constant lr) or after each optimizer step
    schedule = "constant"
    if m["lr_decay"] and m.get("lr_decay_every", "epoch") == "step":
        schedule = "x 0.1 over the run, decayed every step"
    elif m["lr_decay"] and epochs > 1:
        schedule = f"x 0.1^(1/{epochs}) after each epoch"
    clip = f", grad-norm clip {m['grad_clip']}" if m["grad_clip"] else ""
    subset = m["train_subset"]
    of = f" of the first {subset:,} training digits" if subset else ""
    return (f"hidden D={m['hidden']}, {epochs} epoch{'s' * (epochs != 1)}{of}, batch {m['batch_size']}, "
            f"Adam lr {m['lr']:g} ({schedule}){clip}{describe_recipe(m)}")


def describe_recipe(m: dict) -> str:
    """The opt-in departures from the spec's recipe in a `models.<name>` entry, as a caption suffix ('' = none)."""
    parts = []
    if m.get("warmup_steps", 0):
        parts.append(f"lr warm-up over {m['warmup_steps']} steps")
    if m.get("t_sampling", "uniform") != "uniform":
        parts.append(f"logit-normal t (mean {m.get('t_logit_mean', 0.0):g}, std {m.get('t_logit_std', 1.0):g})")
    if m.get("min_snr_gamma", 0):
        parts.append(f"min-SNR-{m['min_snr_gamma']:g} loss weights")
    if m.get("prediction", "eps") == "v":
        parts.append("v-prediction")
    if m.get("ema_decay", 0):
        warmup = f"1-(1+k)^-{m['ema_power']:g}" if m.get("ema_power", 0) else "(1+k)/(10+k)"
        parts.append(f"EMA of weights (decay min({m['ema_decay']:g}, {warmup}))")
    return "".join(", " + part for part in parts)
