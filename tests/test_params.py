"""params.yaml validation: typos, bad types and out-of-range values fail with the key, value and what is allowed."""
import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from difflab.pipeline.params import ParamsError, load, validate

REPO = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((REPO / "params.yaml").read_text())


def edited(path: str, value):
    p = copy.deepcopy(DEFAULT)
    *parents, leaf = path.split(".")
    node = p
    for k in parents:
        node = node[k]
    node[leaf] = value
    return p


def test_shipped_params_are_valid():
    validate(copy.deepcopy(DEFAULT))
    validate(yaml.safe_load((REPO / "tests" / "tiny_params.yaml").read_text()))
    full = load(REPO / "params_full.yaml")
    assert full["models"]["denoiser"]["hidden"] == 128 and full["models"]["class_ddpm"]["epochs"] == 20
    assert set(full) == set(DEFAULT) and set(full["models"]) == set(DEFAULT["models"])


@pytest.mark.parametrize("path,value,message", [
    ("models.class_ddpm.epochs", -1, r"models\.class_ddpm\.epochs: got -1; expected an int in \[1, 10000\]"),
    ("models.class_ddpm.epochs", "ten", r"models\.class_ddpm\.epochs: got 'ten'"),
    ("models.denoiser.kind", "denoser", r"did you mean 'denoiser'"),
    ("models.time_ddpm.lr_decay", "yes", r"lr_decay: got 'yes'; expected a bool"),
    ("device", "gpu", r"device: got 'gpu'"),
    ("gamma", -2, r"gamma: got -2"),
    ("models.class_fm.p_uncond", 1.5, r"p_uncond: got 1.5"),
    ("models.class_fm.snapshots", [1, 0], r"snapshots\[1\]: got 0"),
])
def test_bad_values_name_key_value_and_allowed(path, value, message):
    with pytest.raises(ParamsError, match=message):
        validate(edited(path, value))


def test_unknown_key_suggests_the_right_one():
    p = copy.deepcopy(DEFAULT)
    p["gamme"] = 5
    with pytest.raises(ParamsError, match=r"gamme: unknown key \(value 5\); did you mean `gamma`\?"):
        validate(p)


def test_missing_key_and_cross_field_checks():
    p = copy.deepcopy(DEFAULT)
    del p["models"]["class_ddpm"]["lr"]
    with pytest.raises(ParamsError, match=r"models\.class_ddpm\.lr: missing"):
        validate(p)
    with pytest.raises(ParamsError, match="beta1"):
        validate(edited("ddpm.beta1", 0.5))
    with pytest.raises(ParamsError, match="sampling.time_ddpm.guidance"):
        validate(edited("sampling.time_ddpm.guidance", "gamma"))


@pytest.mark.parametrize("subset", [0, 40_001, 60_000])
def test_the_scoring_classifier_may_not_train_on_held_out_digits(subset):
    with pytest.raises(ParamsError, match=rf"^classifier\.train_subset: got {subset}; expected 1 to 40,000: the "
                                          r"training digits after the first 40,000 are held out"):
        validate(edited("classifier.train_subset", subset))
    validate(edited("classifier.train_subset", 40_000))


def test_more_ddpm_sampling_steps_than_timesteps_fail_in_validation():
    num_ts = DEFAULT["ddpm"]["num_ts"]
    with pytest.raises(ParamsError, match=rf"sample\.ddpm_steps: got {num_ts + 1}; expected at most ddpm\.num_ts "
                                          rf"\({num_ts}\).*use 0 for all {num_ts} steps"):
        validate(edited("sample.ddpm_steps", num_ts + 1))
    validate(edited("sample.ddpm_steps", num_ts))
    p = edited("ddpm.num_ts", 20)
    p["sample"]["ddpm_steps"] = 50
    with pytest.raises(ParamsError, match=r"sample\.ddpm_steps: got 50; expected at most ddpm\.num_ts \(20\)"):
        validate(p)


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
                    max_leaves=6),
       st.sampled_from(["seed", "gamma", "device", "data", "models", "sample", "ddpm", "models.class_ddpm",
                        "models.class_ddpm.hidden", "sample.n_fid", "sampling", "denoiser_eval.sigmas"]))
def test_any_value_anywhere_is_accepted_or_a_params_error(value, path):
    try:
        validate(edited(path, value))
    except ParamsError as err:
        assert str(err)


def test_cli_exit_codes(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump(edited("models.time_fm.epochs", -1)))
    res = subprocess.run([sys.executable, "-m", "difflab.pipeline.params", "check", str(bad)], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 1 and "models.time_fm.epochs: got -1" in res.stderr
    ok = subprocess.run([sys.executable, "-m", "difflab.pipeline.params", "check"], cwd=REPO, capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "broken.yaml").write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load(tmp_path / "broken.yaml")


@pytest.mark.parametrize("edit, key", [
    (lambda a: a.update(i_start=34), "part_a.i_start"),
    (lambda a: a.update(i_start=33), "part_a.i_start"),  # the last timestep: nothing left to denoise
    (lambda a: a.update(sdedit_i_starts=[1, 40]), "part_a.sdedit_i_starts"),
    (lambda a: a.update(inference_steps=[20, 301]), "part_a.inference_steps"),
])
def test_part_a_steps_must_fit_the_strided_schedule(edit, key):
    """The check agrees with part_a.strided_timesteps: 34 steps for T = 300 at stride fraction 0.03."""
    from difflab.part_a.loops import stride_for, strided_timesteps

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["ddpm"]["num_ts"] = 300
    params["part_a"].update(backbone="mnist", stride_fraction=0.03)
    assert len(strided_timesteps(300, stride_for(300, 0.03))) == 34
    fine = copy.deepcopy(params)
    fine["part_a"].update(i_start=32, sdedit_i_starts=[32], inference_steps=[300])
    validate(fine)
    edit(params["part_a"])
    with pytest.raises(ParamsError, match=rf"^{re.escape(key)}: got .*(use|at most)"):
        validate(params)
