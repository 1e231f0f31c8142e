"""DVC stage evaluate_denoiser: the single-step denoiser figures, loss curves, and test MSE / PSNR per sigma
(difflab.part_b.denoiser)."""
import json

from difflab.part_b.denoiser import write_denoiser_report
from difflab.pipeline.errors import run_stage
from difflab.pipeline.params import load


def main() -> None:
    print(json.dumps(write_denoiser_report(load())))


if __name__ == "__main__":
    run_stage("evaluate_denoiser", main)
