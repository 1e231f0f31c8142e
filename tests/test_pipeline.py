"""End to end: the whole DVC pipeline on tiny params in a scratch git repo.

(a) every stage runs and writes its outs, (b) a second `dvc repro` runs nothing, (c) `dvc exp run -S gamma=...`
re-runs exactly the stages that read gamma and their downstream stages, never training, (d) `dvc repro -f`
reproduces byte-identical models and metrics.
"""
import hashlib
import re

import pytest
import yaml

from conftest import run, scratch_repo

RAN = re.compile(r"Running stage '([^']+)'")


def ran(output: str) -> set[str]:
    return set(RAN.findall(output))


def digests(root, patterns=("models/**/*.safetensors", "reports/metrics/*.json")) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for pat in patterns for p in sorted(root.glob(pat))}


def stages(root) -> dict:
    return yaml.safe_load(run(["dvc", "stage", "list", "--name-only"], root).stdout.replace("\n", ": 0\n") or "{}")


def downstream(root, seeds: set[str]) -> set[str]:
    """Stages reachable from `seeds` in the pipeline DAG (dvc dag --dot)."""
    dot = run(["dvc", "dag", "--dot"], root).stdout
    edges = re.findall(r'"([^"]+)" -> "([^"]+)"', dot)
    found, frontier = set(seeds), list(seeds)
    while frontier:
        node = frontier.pop()
        for a, b in edges:
            if a == node and b not in found:
                found.add(b), frontier.append(b)
    return found


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = scratch_repo(tmp_path_factory.mktemp("e2e") / "repo")
    first = run(["dvc", "repro"], root)
    return root, first.stdout


def test_every_stage_runs_and_writes_its_outs(pipeline):
    root, out = pipeline
    names = set(stages(root))
    assert names and ran(out) == names
    assert run(["dvc", "status", "--json"], root).stdout.strip() in ("{}", "")
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    for name in names:
        for o in lock[name].get("outs", []):
            assert (root / o["path"]).exists(), f"{name} did not write {o['path']}"
    assert any(root.glob("reports/samples/class_ddpm/epoch_*.png"))
    assert (root / "reports/samples/class_ddpm/process.gif").stat().st_size > 0


def test_second_repro_runs_nothing(pipeline):
    root, _ = pipeline
    again = run(["dvc", "repro"], root)
    assert ran(again.stdout) == set(), again.stdout


def test_force_repro_is_byte_identical(pipeline):
    root, _ = pipeline
    before = digests(root)
    assert any(k.startswith("models/") for k in before) and any(k.startswith("reports/metrics") for k in before)
    run(["dvc", "repro", "-f"], root)
    assert digests(root) == before


def test_gamma_experiment_reruns_only_gamma_stages(pipeline):
    root, _ = pipeline
    params = yaml.safe_load((root / "params.yaml").read_text())
    readers = {f"sample@{n}" for n, s in params["sampling"].items() if s["guidance"] == "gamma"}
    out = run(["dvc", "exp", "run", "-S", f"gamma={params['gamma'] + 2}"], root).stdout
    rerun = ran(out)
    assert readers <= rerun, out
    assert rerun <= downstream(root, readers), f"stages that do not depend on gamma re-ran: {rerun}"
    assert not any(s.startswith(("train@", "fetch_data")) for s in rerun)
