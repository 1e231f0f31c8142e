"""DVC stage embed_prompts: embed every Part A prompt of part_a.backbone (and "") into data/prompt_embeds.pt."""

from difflab.backbones import embeddings as prompt_embeds
from difflab.backbones.encoders import get_encoder
from difflab.backbones.prompts import Prompts
from difflab.pipeline import paths
from difflab.pipeline.errors import run_stage
from difflab.pipeline.params import load


def main() -> None:
    params = load()
    prompts = Prompts.from_params(params).all()
    encoder = get_encoder(params["part_a"]["backbone"], params)
    prompt_embeds.write_table(paths.PROMPT_EMBEDS, prompt_embeds.embed_all(encoder, prompts))
    print(f"[embed_prompts] {len(prompts)} prompts embedded by {encoder.name} into {paths.PROMPT_EMBEDS}")


if __name__ == "__main__":
    run_stage("embed_prompts", main)
