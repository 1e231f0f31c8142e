"""DVC stage sample@<name>: sample grids at each snapshot epoch, a GIF of the sampling process, the loss curve,
and the samples that the evaluation scores (difflab.part_b.samples)."""
import sys

from difflab.part_b.samples import write_samples
from difflab.pipeline.errors import run_stage
from difflab.pipeline.params import load


def main(name: str) -> None:
    scores = write_samples(name, load())
    print(f"[{name}] fid {scores['fid']} (real-vs-real {scores['fid_baseline']})"
          + (f", intended-class accuracy {scores['accuracy']}" if "accuracy" in scores else ""))


if __name__ == "__main__":
    run_stage(f"sample@{sys.argv[1]}", main, sys.argv[1])
