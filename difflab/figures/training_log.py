"""Read the DVCLive logs that training writes, for plots and the report."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from difflab.pipeline.errors import MissingFileError


def read_curve(live_dir: str | Path, metric: str = "train/loss") -> tuple[list[int], list[float]]:
    """(steps, values) of one DVCLive metric."""
    tsv = Path(live_dir) / "plots" / "metrics" / f"{metric}.tsv"
    if not tsv.is_file():
        raise MissingFileError(f"no DVCLive log {tsv}; it is kept in git, so restore it with "
                               f"`git checkout -- {live_dir}`, or retrain with `dvc repro`")
    df = pd.read_csv(tsv, sep="\t")
    return df["step"].tolist(), df[metric.split("/")[-1]].tolist()
