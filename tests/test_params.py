"""params.yaml validation: typos, bad types and out-of-range values fail with the key, value and what is allowed;
the editor's JSON Schema (params.schema.json) flags them too, in the same words."""
import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from conftest import user_env
from jsonschema import Draft7Validator

from difflab.pipeline.params import SCHEMA, P, ParamsError, json_schema, load, validate

pytestmark = pytest.mark.unit

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


def leaves(spec=SCHEMA, node=DEFAULT, path=""):
    """(dotted key, P) of every key in the schema, optional ones too; an ("each", ...) map by its first name in
    params.yaml."""
    if isinstance(spec, P):
        yield path, spec
        return
    if isinstance(spec, tuple):
        name = next(iter(node))
        yield from leaves(spec[1], node[name], f"{path}.{name}")
        return
    for key, sub in spec.items():
        yield from leaves(sub, node.get(key, {}), f"{path}.{key}" if path else key)


LEAVES = dict(leaves())
EDITOR = Draft7Validator(json.loads((REPO / "params.schema.json").read_text()))


def editor_errors(params: dict) -> list[str]:
    """What an editor with the YAML language server flags in params.yaml (it validates against params.schema.json)."""
    return sorted(err.message for err in EDITOR.iter_errors(params))


def test_shipped_params_are_valid():
    validate(copy.deepcopy(DEFAULT))
    validate(yaml.safe_load((REPO / "tests" / "tiny_params.yaml").read_text()))
    full = load(REPO / "params_full.yaml")
    assert full["models"]["denoiser"]["hidden"] == 128 and full["models"]["class_ddpm"]["epochs"] == 20
    assert set(full) == set(DEFAULT) and set(full["models"]) == set(DEFAULT["models"])


BAD_VALUES = [
    ("models.class_ddpm.epochs", -1, r"models\.class_ddpm\.epochs: got -1; expected an int in \[1, 10000\]"),
    ("models.class_ddpm.epochs", "ten", r"models\.class_ddpm\.epochs: got 'ten'"),
    ("models.denoiser.kind", "denoser", r"did you mean 'denoiser'"),
    ("models.time_ddpm.lr_decay", "yes", r"lr_decay: got 'yes'; expected a bool"),
    ("device", "gpu", r"device: got 'gpu'"),
    ("gamma", -2, r"gamma: got -2"),
    ("models.class_fm.p_uncond", 1.5, r"p_uncond: got 1.5"),
    ("models.class_fm.snapshots", [1, 0], r"snapshots\[1\]: got 0"),
    ("ddpm.zero_terminal_snr", "yes", r"^ddpm\.zero_terminal_snr: got 'yes'; expected a bool"),
    ("models.time_ddpm.prediction", "x0", r"^models\.time_ddpm\.prediction: got 'x0'; expected one of 'eps', 'v'"),
    ("models.time_ddpm.lr_decay_every", "batch", r"^models\.time_ddpm\.lr_decay_every: got 'batch'"),
    ("models.time_fm.ema_power", -1, r"^models\.time_fm\.ema_power: got -1"),
    ("sample.guidance_interval", [0.2, 1.5], r"^sample\.guidance_interval\[1\]: got 1\.5"),
    ("sample.guidance_interval", "0.2-0.8", r"^sample\.guidance_interval: got '0\.2-0\.8'; expected a list"),
    ("sample.ddpm_variance", "large", r"^sample\.ddpm_variance: got 'large'; expected one of 'beta', 'posterior'"),
    ("guidance_sweep.interval", [-0.1, 0.8], r"^guidance_sweep\.interval\[0\]: got -0\.1"),
]


@pytest.mark.parametrize("path,value,message", BAD_VALUES)
def test_bad_values_name_key_value_and_allowed(path, value, message):
    with pytest.raises(ParamsError, match=message):
        validate(edited(path, value))
    assert editor_errors(edited(path, value)), "the editor's schema should flag it too"


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
                        "models.class_ddpm.hidden", "sample.n_fid", "sampling", "denoiser_eval.sigmas", *LEAVES]))
def test_any_value_anywhere_is_accepted_or_a_params_error(value, path):
    """... and what the check accepts, the editor accepts (the editor misses only the checks across keys)."""
    try:
        validate(edited(path, value))
    except ParamsError as err:
        assert str(err)
    else:
        assert editor_errors(edited(path, value)) == []


def test_cli_exit_codes(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump(edited("models.time_fm.epochs", -1)))
    res = subprocess.run([sys.executable, "-m", "difflab.pipeline.params", "check", str(bad)], cwd=REPO, env=user_env(),
                         capture_output=True, text=True)
    assert res.returncode == 1 and "models.time_fm.epochs: got -1" in res.stderr
    ok = subprocess.run([sys.executable, "-m", "difflab.pipeline.params", "check"], cwd=REPO, env=user_env(),
                        capture_output=True,
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


def test_the_schema_file_is_the_schema():
    out = subprocess.run([sys.executable, "-m", "difflab.pipeline.params", "schema"], cwd=REPO, capture_output=True,
                         text=True, check=True, env=user_env()).stdout
    assert json.loads(out) == json_schema()
    assert (REPO / "params.schema.json").read_text() == out, \
        "params.schema.json is stale: run `python -m difflab.pipeline.params schema > params.schema.json`"
    Draft7Validator.check_schema(json_schema())


@pytest.mark.parametrize("name", ["params.yaml", "params_full.yaml", "tests/tiny_params.yaml"])
def test_params_files_point_the_editor_at_the_schema_and_pass_it(name):
    path = REPO / name
    first = path.read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema="), "an editor finds the schema from this line"
    assert (path.parent / first.partition("$schema=")[2]).resolve() == REPO / "params.schema.json"
    assert editor_errors(yaml.safe_load(path.read_text())) == []


def test_the_editor_flags_misspelt_keys_and_out_of_range_values():
    top = copy.deepcopy(DEFAULT)
    top["gamme"] = 5
    assert editor_errors(top) == ["Additional properties are not allowed ('gamme' was unexpected)"]
    nested = copy.deepcopy(DEFAULT)
    nested["models"]["class_ddpm"]["epoch"] = nested["models"]["class_ddpm"].pop("epochs")
    assert editor_errors(nested) == ["'epochs' is a required property",
                                     "Additional properties are not allowed ('epoch' was unexpected)"]
    assert editor_errors(edited("models.class_ddpm.epochs", -1)) == ["-1 is less than the minimum of 1"]
    assert editor_errors(edited("part_a.stride_fraction", 0.6)) == ["0.6 is greater than the maximum of 0.5"]
    assert editor_errors(edited("sample.ddpm_sampler", "dpm")) == [
        "'dpm' is not one of ['ddpm', 'ddim', 'dpmsolver', 'dpmsolver_sde']"]
    assert editor_errors(edited("device", "cuda:x")) == [
        r"'cuda:x' does not match '^(?:auto|cpu|cuda(:\\d+)?|mps)$'"]  # the pattern's repr
    assert editor_errors(edited("models.class ddpm", DEFAULT["models"]["class_ddpm"])) == [
        "'class ddpm' does not match any of the regexes: '^[A-Za-z0-9_]+$'"]


@pytest.mark.parametrize("path", LEAVES)
def test_every_key_says_what_it_means_in_the_same_words_to_the_check_and_the_editor(path):
    """A new key needs `doc=`: the check's error and the editor's hover text both show it."""
    p = LEAVES[path]
    assert p.doc, f"{path}: give its P a doc=\"what it means\" (shown by the params check and the editor)"
    with pytest.raises(ParamsError) as err:
        validate(edited(path, {"not": "a value"}))
    assert str(err.value) == f"{path}: got {{'not': 'a value'}}; expected {p.describe()} ({p.doc})"
    node = json_schema()
    for key in path.split("."):
        node = node["properties"][key] if "properties" in node else node["patternProperties"]["^[A-Za-z0-9_]+$"]
    assert node["description"] == f"{p.doc}. Expected {p.describe()}."


def with_keys(**paths):
    p = copy.deepcopy(DEFAULT)
    for path, value in paths.items():
        *parents, leaf = path.split("__")
        node = p
        for k in parents:
            node = node[k]
        node[leaf] = value
    return p


@pytest.mark.parametrize("edits, message", [
    # cross-field checks of the issue-22 options: one line naming the key and the fix
    (dict(models__time_fm__prediction="v"), r"^models\.time_fm\.prediction: set for a time_fm model.*remove it"),
    (dict(ddpm__zero_terminal_snr=True),
     r"^models\.time_ddpm\.prediction: eps \(the default\) with ddpm\.zero_terminal_snr: true.*set "
     r"models\.time_ddpm\.prediction: v, or ddpm\.zero_terminal_snr: false"),
    (dict(ddpm__zero_terminal_snr=True, models__time_ddpm__prediction="v"), r"^models\.class_ddpm\.prediction: eps"),
    (dict(models__class_fm_noschedule__lr_decay=True),
     r"^models\.class_fm_noschedule\.lr_decay: true with 1 epoch.*set models\.class_fm_noschedule\.lr_decay_every: "
     r"step.*or lr_decay: false"),
    (dict(models__class_fm_noschedule__lr_decay_every="step"),
     r"^models\.class_fm_noschedule\.lr_decay_every: set while lr_decay is false"),
    (dict(models__class_ddpm__ema_power=0.75), r"^models\.class_ddpm\.ema_power: set without an EMA.*ema_decay > 0"),
    (dict(sample__guidance_interval=[0.8, 0.2]), r"^sample\.guidance_interval: got \[0\.8, 0\.2\]; expected \[lo, hi\] "
                                                 r"with 0 <= lo < hi <= 1"),
    (dict(sample__guidance_interval=[0.5]), r"^sample\.guidance_interval: got \[0\.5\]"),
    (dict(guidance_sweep__interval=[0.8, 0.8]), r"^guidance_sweep\.interval: got \[0\.8, 0\.8\]; expected \[lo, hi\] "
                                                r"with 0 <= lo < hi <= 1"),
])
def test_new_options_refuse_settings_that_would_do_nothing_or_break(edits, message):
    with pytest.raises(ParamsError, match=message):
        validate(with_keys(**edits))


def test_new_options_validate_when_consistent():
    zero_snr = with_keys(ddpm__zero_terminal_snr=True, models__time_ddpm__prediction="v",
                         models__class_ddpm__prediction="v")
    validate(zero_snr)
    validate(with_keys(models__time_ddpm__lr_decay=True, models__time_ddpm__lr_decay_every="step",
                       models__time_fm__ema_power=0.75, sample__guidance_interval=[0.0, 1.0],
                       sample__ddpm_variance="posterior", guidance_sweep__interval=[0.0, 0.5]))
    without = copy.deepcopy(DEFAULT)  # both optional: absent means the spec's variance and no interval sweep
    del without["sample"]["ddpm_variance"], without["guidance_sweep"]["interval"]
    validate(without)
    validate(with_keys(models__class_ddpm__lr_decay_every="epoch", models__class_ddpm__prediction="v"))


@pytest.mark.parametrize("key, value", [("stride_fraction", 13 / 300), ("inference_steps", [20, 300]),
                                        ("noise_fractions", [0.5, 1.0]),
                                        ("pair_matrix", {"views": ["flip"], "seeds": 2, "steps": 300})])
def test_part_a_on_a_zero_snr_schedule_never_starts_at_the_last_timestep(key, value):
    """At t = T - 1 a zero-SNR schedule has abar = 0 and Part A's eps-based steps lose x0. T - 1 = 299 = 13 x 23,
    so stride 13 starts there, as do 300 leading steps and the noise fraction 1 (as part_a.loops computes them)."""
    from difflab.part_a import loops as pa

    assert pa.strided_timesteps(300, pa.stride_for(300, 13 / 300))[0] == pa.inference_timesteps(300, 300)[0] == 299
    assert pa.noise_timestep(300, 1.0) == 299 and pa.inference_timesteps(300, 299)[0] < 299
    p = with_keys(ddpm__zero_terminal_snr=True, models__time_ddpm__prediction="v", models__class_ddpm__prediction="v")
    p["part_a"][key] = value
    name = "pair_matrix.steps" if key == "pair_matrix" else key
    with pytest.raises(ParamsError, match=rf"^part_a\.{re.escape(name)}: starts a loop at t = T - 1 = 299.*"
                                          r"ddpm\.zero_terminal_snr: false"):
        validate(p)
    p["ddpm"]["zero_terminal_snr"] = False
    validate(p)
