"""Where stages read and write, in one place, so stages and dvc.yaml agree (paths are relative to the repo root)."""
from dataclasses import dataclass
from pathlib import Path

MNIST = Path("data/mnist")
MODELS = Path("models")
REPORTS = Path("reports")
CLASSIFIER = MODELS / "classifier.safetensors"
PROMPT_EMBEDS = Path("data/prompt_embeds.pt")
USER_IMAGES = Path("inputs/images")
PART_A = REPORTS / "part_a"
PART_A_METRICS = REPORTS / "metrics" / "part_a.json"


@dataclass
class Outputs:
    """What one training run writes."""
    model: Path          # final weights (safetensors)
    snapshots: Path      # directory of epoch_XX.safetensors (and step_XXXXXX.safetensors inside epoch 1)
    live: Path           # DVCLive directory
    checkpoint: Path     # directory holding last.pt while a run is incomplete


def model_file(name: str) -> Path:
    return MODELS / f"{name}.safetensors"


def snapshot_dir(name: str) -> Path:
    return MODELS / "snapshots" / name


def train_outputs(name: str) -> Outputs:
    return Outputs(model=model_file(name), snapshots=snapshot_dir(name), live=REPORTS / "train" / name,
                   checkpoint=Path("checkpoints") / name)


def snapshots(name: str) -> dict[int, Path]:
    """Snapshot epoch -> weights file of the snapshots taken after an epoch, in epoch order."""
    files = sorted(snapshot_dir(name).glob("epoch_*.safetensors"))
    return {int(f.stem.split("_")[1]): f for f in files}
