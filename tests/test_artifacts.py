"""dvc.yaml's `artifacts:` cannot go stale: one model artifact per trained model (and the classifier), at the path
its stage writes, with a desc that names the kind, recipe and training digits params.yaml gives it. DVC reads
the section itself here, so what is checked is what `dvc artifacts get` sees."""
import re
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo
from gto.constants import assert_name_is_valid

from difflab.pipeline.params import Kind

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
# DVC's documented rule: letters and numbers, '-' as separator (not at the start or end)
NAME = re.compile(r"^[A-Za-z0-9]+(-[A-Za-z0-9]+)*$")
FAMILY_WORDS = {"denoiser": "denoiser UNet", "pure_noise": "Pure-noise denoiser UNet", "ddpm": "DDPM UNet",
                "flow": "flow-matching UNet"}
FAMILY_LABELS = {"denoiser": "denoiser", "pure_noise": "denoiser", "ddpm": "ddpm", "flow": "flow-matching"}


@pytest.fixture(scope="module")
def dvc_repo():
    repo = Repo(str(REPO))
    yield repo
    repo.close()


@pytest.fixture(scope="module")
def artifacts(dvc_repo):
    return dvc_repo.artifacts.read()["dvc.yaml"]


def stage_outs(repo: Repo, name: str) -> list[str]:
    return [out.def_path for stage in repo.index.stages if stage.name == name for out in stage.outs]


def artifact_name(model: str) -> str:
    return model.replace("_", "-")


def data_phrase(subset: int) -> str:
    return f"on the first {subset:,} MNIST training digits" if subset else "on all 60,000 MNIST training digits"


def recipe_phrases(m: dict) -> list[str]:
    """What the desc must say of a `models.<name>` entry's recipe and training digits."""
    epochs = m["epochs"]
    # ExponentialLR per epoch never acts in one epoch; per optimizer step it always does
    decayed = m["lr_decay"] and (epochs > 1 or m.get("lr_decay_every") == "step")
    return [f"D={m['hidden']},", f" {epochs} epoch{'s' * (epochs != 1)},", f"batch {m['batch_size']},",
            f"lr {m['lr']:g} {'decayed' if decayed else 'constant'}", data_phrase(m["train_subset"])]


def option_phrases(m: dict) -> dict[str, str | None]:
    """Each opt-in recipe option: its word -> the phrase the desc must contain, or None: the word must be absent."""
    return {"warm-up": f"warm-up {m['warmup_steps']}" if m.get("warmup_steps") else None,
            "logit-normal": "logit-normal t" if m.get("t_sampling", "uniform") == "logit_normal" else None,
            "EMA": f"EMA {m['ema_decay']:g}" if m.get("ema_decay") else None,
            "power-law EMA warm-up": f"power-law EMA warm-up {m['ema_power']:g}" if m.get("ema_power") else None,
            "v-prediction": "v-prediction" if m.get("prediction") == "v" else None,
            "min-SNR": f"min-SNR-{m['min_snr_gamma']:g}" if m.get("min_snr_gamma") else None,
            "grad clip": f"grad clip {m['grad_clip']:g}" if m["grad_clip"] else None}


def test_every_trained_model_and_the_classifier_is_an_artifact(artifacts):
    assert set(artifacts) == {artifact_name(m) for m in PARAMS["models"]} | {"classifier"}
    for name, artifact in artifacts.items():
        assert NAME.match(name), name
        assert_name_is_valid(name)
        assert artifact.type == "model" and "mnist" in artifact.labels, name


def test_artifact_paths_are_the_stage_outputs(dvc_repo, artifacts):
    for model in PARAMS["models"]:
        assert artifacts[artifact_name(model)].path in stage_outs(dvc_repo, f"train@{model}"), model
    assert artifacts["classifier"].path in stage_outs(dvc_repo, "classifier")


@pytest.mark.parametrize("model", list(PARAMS["models"]))
def test_model_desc_and_labels_match_params(artifacts, model):
    m, artifact = PARAMS["models"][model], artifacts[artifact_name(model)]
    kind, desc = Kind.parse(m["kind"]), artifact.desc
    assert FAMILY_WORDS[kind.family] in desc and FAMILY_LABELS[kind.family] in artifact.labels, desc
    if kind.conditioning != "none":
        assert desc.startswith(f"{kind.conditioning.capitalize()}-conditioned "), desc
        assert f"{kind.conditioning}-conditioned" in artifact.labels
    if kind.family == "ddpm":
        assert f"T={PARAMS['ddpm']['num_ts']}" in desc
    if kind.family == "denoiser":
        assert f"x + {m['sigma']:g} eps" in desc
    for phrase in recipe_phrases(m):
        assert phrase in desc, f"{model}: {phrase!r} missing from {desc!r}"
    for word, phrase in option_phrases(m).items():
        absent = not re.search(rf"(?<!EMA ){re.escape(word)}", desc)  # "warm-up" is not the EMA's warm-up
        assert (phrase in desc) if phrase else absent, f"{model}: {phrase or word!r} in {desc!r}?"


def test_classifier_desc_matches_params(artifacts):
    c, desc = PARAMS["classifier"], artifacts["classifier"].desc
    for phrase in (f"{c['epochs']} epochs,", f"batch {c['batch_size']},", f"lr {c['lr']:g},",
                   f"shifts of {c['max_shift']} px", data_phrase(c["train_subset"])):
        assert phrase in desc, f"{phrase!r} missing from {desc!r}"
