"""DVC stage part_a: every Part A deliverable on part_a.backbone into reports/part_a (figures + manifest.json),
with its numbers in reports/metrics/part_a.json."""
import time

from difflab.backbones import embeddings as prompt_embeds
from difflab.backbones.registry import get_backbone
from difflab.part_a.config import PartAConfig
from difflab.part_a.inputs import part_a_images
from difflab.part_a.judge import mnist_judge
from difflab.part_a.sections import PartA, run
from difflab.pipeline import paths
from difflab.pipeline.errors import run_stage
from difflab.pipeline.params import load
from difflab.pipeline.runtime import seed_everything, write_metrics


def main() -> None:
    params = load()
    seed_everything(params["part_a"]["seed"])
    start = time.perf_counter()
    backbone = get_backbone(params["part_a"]["backbone"], params)
    images = part_a_images(params, paths.MNIST, paths.USER_IMAGES, backbone.image_size)
    judge = mnist_judge(paths.CLASSIFIER, paths.MNIST, backbone.device) if backbone.name == "mnist" else None
    metrics = run(PartA(backbone, prompt_embeds.load(paths.PROMPT_EMBEDS), PartAConfig.from_params(params), images,
                        paths.PART_A, judge))
    write_metrics(paths.PART_A_METRICS, metrics, backbone.device, params["precision"])
    print(f"[part_a] {backbone.name}: {paths.PART_A} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    run_stage("part_a", main)
