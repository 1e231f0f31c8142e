"""Model files as safetensors (byte-deterministic, unlike torch.save) with the config needed to rebuild them."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from difflab.objectives import build_model
from difflab.unet import UNet


def save_model(path: str | Path, model: UNet, kind: str) -> None:
    """Write weights and {kind, hidden} atomically (temp file + rename), so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() if v.is_floating_point() else v.detach().cpu()
             for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"config": json.dumps({"kind": kind, "hidden": model.hidden})})
    os.replace(tmp, path)


def load_model(path: str | Path, device: torch.device | str = "cpu", fused: bool = True) -> tuple[UNet, str]:
    """Rebuild a saved UNet in eval mode, by default with BatchNorm folded for fast inference (UNet.for_inference);
    returns (model, kind)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} is missing; run `dvc repro` to train it")
    try:
        with safe_open(str(path), "pt") as f:
            config = json.loads((f.metadata() or {})["config"])
        state = load_file(str(path))
    except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as err:
        raise ValueError(f"model file {path} is corrupt or not a difflab model ({err}); "
                         f"delete it and run `dvc repro` to retrain") from err
    model = build_model(config["kind"], config["hidden"])
    model.load_state_dict(state)
    model = model.to(device).eval()
    return (model.for_inference() if fused else model), config["kind"]
