"""DVC stage part_a: every Part A deliverable on part_a.backbone into reports/part_a (figures + manifest.json),
with its numbers in reports/metrics/part_a.json."""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from difflab import paths, prompt_embeds  # noqa: E402
from difflab.backbones import get_backbone  # noqa: E402
from difflab.errors import run_stage  # noqa: E402
from difflab.params import load  # noqa: E402
from difflab.part_a_config import PartAConfig  # noqa: E402
from difflab.illusions import mnist_judge  # noqa: E402
from difflab.part_a_deliverables import PartA  # noqa: E402
from difflab.part_a_inputs import part_a_images  # noqa: E402
from difflab.runtime import seed_everything, write_metrics  # noqa: E402


def main() -> None:
    params = load()
    seed_everything(params["part_a"]["seed"])
    start = time.perf_counter()
    backbone = get_backbone(params["part_a"]["backbone"], params)
    images = part_a_images(params, paths.MNIST, paths.USER_IMAGES, backbone.image_size)
    judge = mnist_judge(paths.CLASSIFIER, paths.MNIST, backbone.device) if backbone.name == "mnist" else None
    metrics = PartA(backbone, prompt_embeds.load(paths.PROMPT_EMBEDS), PartAConfig.from_params(params), images,
                    paths.PART_A, judge).run()
    write_metrics(paths.PART_A_METRICS, metrics, backbone.device, params["precision"])
    print(f"[part_a] {backbone.name}: {paths.PART_A} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    run_stage("part_a", main)
