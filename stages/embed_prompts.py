"""DVC stage embed_prompts: embed every Part A prompt of part_a.backbone (and "") into data/prompt_embeds.pt."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from difflab import paths, prompt_embeds  # noqa: E402
from difflab.backbones import get_backbone  # noqa: E402
from difflab.errors import run_stage  # noqa: E402
from difflab.params import load  # noqa: E402
from difflab.part_a_config import Prompts  # noqa: E402


def main() -> None:
    params = load()
    prompts = Prompts.from_params(params).all()
    backbone = get_backbone(params["part_a"]["backbone"], params)
    prompt_embeds.save(paths.PROMPT_EMBEDS, prompt_embeds.embed_all(backbone, prompts))
    print(f"[embed_prompts] {len(prompts)} prompts embedded by {backbone.name} into {paths.PROMPT_EMBEDS}")


if __name__ == "__main__":
    run_stage("embed_prompts", main)
