"""Model files as safetensors (byte-deterministic, unlike torch.save) with the config needed to rebuild them."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save

from difflab.core.families import build_model
from difflab.core.unet import UNet
from difflab.pipeline.errors import CorruptFileError, read_weights, write_atomically
from difflab.pipeline.params import Kind


def save_model(path: str | Path, model: UNet, kind: str) -> None:
    """Write weights and {kind, hidden} (DDPM kinds also `prediction`, eps or v) atomically (temp file + rename),
    so a crash or a full disk never leaves half a file."""
    path = Path(path)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() if v.is_floating_point() else v.detach().cpu()
             for k, v in model.state_dict().items()}
    config = {"kind": kind, "hidden": model.hidden}
    if Kind.parse(kind).family == "ddpm":
        config["prediction"] = model.prediction
    write_atomically(path, save(state, metadata={"config": json.dumps(config)}))


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[UNet, str]:
    """Rebuild a saved UNet in eval mode, as trained (difflab.core.inference.load_for_inference folds it for
    sampling), with the prediction its file records (eps for files written before it was recorded); returns
    (model, kind)."""
    config, state = read_weights(path)
    try:
        model = build_model(config["kind"], config["hidden"], config.get("prediction", "eps"))
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CorruptFileError(f"model file {path} is corrupt or not a difflab model ({type(err).__name__}: "
                               f"{str(err)[:200]}); restore it with `dvc checkout {path}`, or retrain it with "
                               "`dvc repro`") from err
    return model.to(device).eval(), config["kind"]
