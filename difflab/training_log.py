"""Read the DVCLive logs that training writes, for plots and the report."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_curve(live_dir: str | Path, metric: str = "train/loss") -> tuple[list[int], list[float]]:
    """(steps, values) of one DVCLive metric."""
    tsv = Path(live_dir) / "plots" / "metrics" / f"{metric}.tsv"
    if not tsv.is_file():
        raise FileNotFoundError(f"no DVCLive log {tsv}; run the training stage first (`dvc repro`)")
    df = pd.read_csv(tsv, sep="\t")
    return df["step"].tolist(), df[metric.split("/")[-1]].tolist()
