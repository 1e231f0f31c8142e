"""README "Scaling out", run offline: a bare git repo and a local-directory DVC remote stand in for the shared
remotes. One machine pushes the base run; it and a clone each run a `gamma` experiment and push it; a third
machine pulls both, compares them with `dvc exp show`, and restores one byte for byte without re-running it.
Returning to params a machine already ran restores the outputs from DVC's run-cache instead of sampling again."""
import hashlib
import json
import re
from pathlib import Path

import pytest
from conftest import run, scratch_repo

pytestmark = pytest.mark.e2e

RAN = re.compile(r"Running stage '([^']+)'")
METRICS = "reports/metrics/sample_class_ddpm.json"
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


def clone(origin: Path, dest: Path) -> Path:
    run(["git", "clone", "-q", str(origin), str(dest)], dest.parent)
    return dest


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_experiments_from_two_machines_meet_on_a_third(tmp_path):
    origin, shared = tmp_path / "origin.git", tmp_path / "dvc-remote"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path)

    # once, on any machine: the remote, and the base outputs so no other machine retrains them
    base = scratch_repo(tmp_path / "base")
    run(["git", "remote", "add", "origin", str(origin)], base)
    run(["dvc", "remote", "add", "-d", "shared", str(shared)], base)
    run(["dvc", "repro"], base)
    run(["git", "add", "-A"], base)
    run(["git", "commit", "-qm", "base run"], base)
    run(["git", "push", "-q", "origin", "HEAD:main"], base)
    run(["dvc", "push", "--run-cache"], base)
    base_outputs = digests(base)

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
