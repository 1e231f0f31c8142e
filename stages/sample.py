"""DVC stage sample@<name>: a sample grid at every training snapshot, logged with DVCLive by step (a slider), a GIF
of the sampling process, the loss curve, and the samples that the evaluation scores (difflab.part_b.samples)."""
import sys

from difflab.part_b.samples import write_samples
from difflab.pipeline.errors import run_stage
from difflab.pipeline.params import load


def main(name: str) -> None:
    scores = write_samples(name, load())
    shown = [k for k in ("fid", "precision", "recall", "legibility", "accuracy", "cas") if k in scores]
    print(f"[{name}] " + ", ".join(f"{k} {scores[k]} [{scores[k + '_lo']}, {scores[k + '_hi']}]" for k in shown)
          + f" (real-vs-real fid {scores['fid_baseline']})")


if __name__ == "__main__":
    run_stage(f"sample@{sys.argv[1]}", main, sys.argv[1])
