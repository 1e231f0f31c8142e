"""DVC stage guidance_sweep: intended-class accuracy and Fréchet distance of class-conditioned models across the
CFG scales in `guidance_sweep.gammas` (difflab.part_b.guidance)."""
import sys

from difflab.part_b.guidance import write_sweeps
from difflab.pipeline.errors import run_stage
from difflab.pipeline.params import load

if __name__ == "__main__":
    run_stage("guidance_sweep", lambda names: write_sweeps(names, load()), sys.argv[1:])
