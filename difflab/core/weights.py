"""Model files as safetensors (byte-deterministic, unlike torch.save) with the config needed to rebuild them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save

from difflab.core.families import build_model
from difflab.core.unet import UNet
from difflab.pipeline.errors import CorruptFileError, read_config, read_weights, write_atomically
from difflab.pipeline.params import Kind


@dataclass(frozen=True)
class Snapshot:
    """Where in training a snapshot file was taken: after `step` optimizer steps (DVCLive's step, the loss curve's
    x axis: the loss logged at step s is that of these weights) and `epoch` epochs (a fraction inside an epoch)."""
    path: Path
    step: int
    epoch: float

    @property
    def whole_epoch(self) -> int | None:
        """The epoch it ends, or None for a snapshot taken inside an epoch."""
        return int(self.epoch) if float(self.epoch).is_integer() else None


def save_model(path: str | Path, model: UNet, kind: str, at: tuple[int, float] | None = None) -> None:
    """Write weights and {kind, hidden} (DDPM kinds also `prediction`, eps or v) atomically (temp file + rename),
    so a crash or a full disk never leaves half a file; a snapshot's config also records `at`, its (step, epoch)."""
    path = Path(path)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() if v.is_floating_point() else v.detach().cpu()
             for k, v in model.state_dict().items()}
    config = {"kind": kind, "hidden": model.hidden}
    if Kind.parse(kind).family == "ddpm":
        config["prediction"] = model.prediction
    if at is not None:
        config["snapshot"] = {"step": at[0], "epoch": at[1]}
    write_atomically(path, save(state, metadata={"config": json.dumps(config)}))


def read_snapshot(path: str | Path) -> Snapshot:
    """The step and epoch a snapshot file records (its metadata only, no tensors)."""
    path = Path(path)
    at = read_config(path, "snapshot", "training snapshot", f"`dvc repro train@{path.parent.name}`",
                     require=("snapshot",))["snapshot"]
    return Snapshot(path, int(at["step"]), float(at["epoch"]))


def list_snapshots(directory: str | Path) -> list[Snapshot]:
    """Every snapshot in a directory (epoch_XX and step_XXXXXX files), in training order."""
    return sorted((read_snapshot(f) for f in Path(directory).glob("*.safetensors")), key=lambda s: s.step)


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
