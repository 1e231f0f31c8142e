"""README "Scaling out", run offline: a bare git repo and a local-directory DVC remote stand in for the shared
remotes. One machine pushes the base run; it and a clone each run a `gamma` experiment and push it; a third
machine pulls both, compares them with `dvc exp show`, and restores one byte for byte without re-running it.
Returning to params a machine already ran restores the outputs from DVC's run-cache instead of sampling again.
A registered model is fetched by name with `dvc artifacts get`, with no clone, and loads with the library."""
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dvc.api
import pytest
import torch
from conftest import run, scratch_repo

from difflab.core.weights import load_model

pytestmark = pytest.mark.e2e

RAN = re.compile(r"Running stage '([^']+)'")
METRICS = "reports/metrics/sample_class_ddpm.json"
MODEL, ARTIFACT = "models/class_ddpm.safetensors", "class-ddpm"
README = Path(__file__).resolve().parents[1] / "README.md"
OUTPUTS = ("data", "models", "reports", "checkpoints")


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in OUTPUTS for p in sorted((root / d).rglob("*")) if p.is_file()}


def experiments(root: Path) -> dict[str, tuple[float, dict]]:
    """Experiment name -> (gamma, class_ddpm sample metrics) from `dvc exp show --json`."""
    found = {}
    for commit in json.loads(run(["dvc", "exp", "show", "--json"], root).stdout):
        for exp in commit.get("experiments") or []:
            rev = exp["revs"][0]
            data = rev.get("data") or {}
            if METRICS in (data.get("metrics") or {}):
                found[exp.get("name") or rev.get("name")] = (data["params"]["params.yaml"]["data"]["gamma"],
                                                             data["metrics"][METRICS]["data"])
    return found


def readme_python(heading: str) -> str:
    """The first ```python block of the README section under `heading`."""
    section = README.read_text().split(heading, 1)[1].split("\n### ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def clone(origin: Path, dest: Path) -> Path:
    run(["git", "clone", "-q", str(origin), str(dest)], dest.parent)
    return dest


@dataclass
class Pushed:
    root: Path           # where the machines live
    origin: Path         # the bare git repo every machine shares
    base: Path           # the first machine, which ran the pipeline and pushed it
    outputs: dict        # its outputs' digests right after the push


@pytest.fixture(scope="module")
def pushed(tmp_path_factory) -> Iterator[Pushed]:
    """Once, on any machine: the remotes, and the base outputs pushed so no other machine retrains them."""
    tmp = tmp_path_factory.mktemp("scaling")
    origin, shared = tmp / "origin.git", tmp / "dvc-remote"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # `run` gives DVC a user's environment (conftest.user_env)
        run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp)
        base = scratch_repo(tmp / "base")
        run(["git", "remote", "add", "origin", str(origin)], base)
        run(["dvc", "remote", "add", "-d", "shared", str(shared)], base)
        run(["dvc", "repro"], base)
        run(["git", "add", "-A"], base)
        run(["git", "commit", "-qm", "base run"], base)
        run(["git", "push", "-q", "origin", "HEAD:main"], base)
        run(["dvc", "push", "--run-cache"], base)
        yield Pushed(tmp, origin, base, digests(base))


def test_experiments_from_two_machines_meet_on_a_third(pushed):
    tmp_path, origin, base, base_outputs = pushed.root, pushed.origin, pushed.base, pushed.outputs

    # on each machine (the first one too): run one experiment, push it
    made = {}
    for name, gamma in (("gamma-3", 3), ("gamma-7", 7)):
        machine = base if name == "gamma-3" else clone(origin, tmp_path / "machine-2")
        if machine is not base:
            run(["dvc", "pull", "--run-cache"], machine)
        out = run(["dvc", "exp", "run", "-n", name, "-S", f"gamma={gamma}"], machine).stdout
        assert RAN.findall(out) and all(s.startswith("sample@class_") or s == "report" for s in RAN.findall(out)), out
        made[name] = (digests(machine), json.loads((machine / METRICS).read_text()))
        run(["dvc", "exp", "push", "origin", name], machine)

    # run-cache: back to params this machine already ran restores the outputs instead of sampling again
    out = run(["dvc", "exp", "run", "-n", "gamma-5-again", "-S", "gamma=5.0"], base).stdout
    assert not RAN.findall(out), out
    assert "Stage 'sample@class_ddpm' is cached - skipping run" in out, out
    assert digests(base) == base_outputs

    # anyone, anywhere: pull both, compare them, restore one without re-running it
    third = clone(origin, tmp_path / "third")
    listed = run(["dvc", "exp", "list", "origin"], third).stdout
    assert "gamma-3" in listed and "gamma-7" in listed, listed
    for name in made:
        run(["dvc", "exp", "pull", "origin", name], third)
    shown = experiments(third)
    assert {name: gamma for name, (gamma, _) in shown.items()} == {"gamma-3": 3, "gamma-7": 7}, shown
    for name, (_, metrics) in shown.items():
        assert metrics == made[name][1]  # each experiment's own metrics, as its machine computed them
    run(["dvc", "exp", "apply", "gamma-3"], third)
    out = run(["dvc", "checkout"], third).stdout
    assert run(["dvc", "status", "--json"], third).stdout.strip() in ("{}", "")
    assert digests(third) == made["gamma-3"][0]


def test_a_registered_model_is_fetched_by_name_without_a_clone(pushed, tmp_path, monkeypatch):
    want = pushed.outputs[MODEL]
    run(["gto", "register", ARTIFACT, "--push"], pushed.base)  # README "Models"

    # anywhere: a directory that is no git repo and no DVC project
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run(["dvc", "artifacts", "get", str(pushed.origin), ARTIFACT], elsewhere)
    fetched = elsewhere / Path(MODEL).name
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == want
    monkeypatch.chdir(elsewhere)
    namespace: dict = {}
    exec(readme_python("### Models"), namespace)  # the README's loading and sampling lines, as a user runs them
    assert namespace["kind"] == "class_ddpm" and namespace["digits"].shape == (10, 1, 28, 28)
    assert 0 <= namespace["digits"].min() and namespace["digits"].max() <= 1

    # in a second clone, by name, to a path of one's choice
    second = clone(pushed.origin, tmp_path / "machine-3")
    run(["dvc", "artifacts", "get", ".", ARTIFACT, "-o", "fetched/model.safetensors"], second)
    assert hashlib.sha256((second / "fetched" / "model.safetensors").read_bytes()).hexdigest() == want
    model, kind = load_model(second / "fetched" / "model.safetensors")
    reference, _ = load_model(pushed.base / MODEL)
    assert kind == "class_ddpm"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))

    # from Python: the registered version's path and commit
    shown = dvc.api.artifacts_show(ARTIFACT, repo=str(pushed.origin))
    assert shown["path"] == MODEL
    with dvc.api.open(shown["path"], repo=str(pushed.origin), rev=shown["rev"], mode="rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == want
