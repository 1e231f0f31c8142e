"""Reliability end to end: a killed training stage resumes to the same bytes, outputs round-trip through a DVC
remote, and queued experiments run side by side with distinct results."""
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import run, scratch_repo, user_env

pytestmark = pytest.mark.e2e

TRAIN = "train@class_ddpm"
SLOW_TRAIN = {"hidden": 8, "epochs": 4, "snapshots": [1, 4]}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digests(root: Path, dirs=("models", "reports/metrics", "reports/samples", "data/mnist")) -> dict:
    return {str(p.relative_to(root)): sha(p) for d in dirs for p in sorted((root / d).rglob("*")) if p.is_file()}


def slow_repo(tmp_path: Path, name: str) -> Path:
    root = scratch_repo(tmp_path / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["models"]["class_ddpm"].update(SLOW_TRAIN, train_subset=0)  # all fake digits: epochs long enough to kill
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_killed_training_resumes_to_identical_bytes(tmp_path, sig):
    reference = slow_repo(tmp_path, "reference")
    run(["dvc", "repro", TRAIN], reference)
    victim = slow_repo(tmp_path, "victim")
    run(["dvc", "repro", "fetch_data"], victim)
    proc = subprocess.Popen(["dvc", "repro", TRAIN], cwd=victim, env=user_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    ckpt = victim / "checkpoints" / "class_ddpm" / "last.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"training finished before it could be interrupted:\n{proc.stdout.read()}"
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)
    assert not (victim / "models" / "class_ddpm.safetensors").exists()
    resumed = run(["dvc", "repro", TRAIN], victim).stdout
    assert "resuming after epoch" in resumed, resumed
    snapshots = sorted(p.name for p in (reference / "models/snapshots/class_ddpm").iterdir())
    assert len(snapshots) == 2 + 3  # epochs 1 and 4, three steps inside epoch 1
    assert sorted(p.name for p in (victim / "models/snapshots/class_ddpm").iterdir()) == snapshots
    for rel in ("models/class_ddpm.safetensors", *(f"models/snapshots/class_ddpm/{f}" for f in snapshots),
                "reports/train/class_ddpm/plots/metrics/train/loss.tsv",
                "reports/train/class_ddpm/plots/metrics/epoch/loss.tsv"):
        assert sha(victim / rel) == sha(reference / rel), rel
    assert not ckpt.exists()


def test_push_pull_restores_every_output_byte_for_byte(tmp_path):
    root = scratch_repo(tmp_path / "origin")
    run(["dvc", "remote", "add", "-d", "local", str(tmp_path / "remote")], root)
    run(["dvc", "repro"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "run"], root)
    run(["dvc", "push"], root)
    made = tree_digests(root)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], tmp_path)
    run(["dvc", "pull"], clone)
    assert run(["dvc", "status", "--json"], clone).stdout.strip() in ("{}", "")
    assert tree_digests(clone) == made

    fresh = tmp_path / "fresh"
    run(["git", "clone", "-q", str(root), str(fresh)], tmp_path)
    out = run(["dvc", "repro", "--pull"], fresh).stdout
    assert "Running stage" not in out, out
    assert tree_digests(fresh) == made


def test_two_queued_experiments_run_in_parallel_with_distinct_results(tmp_path):
    root = scratch_repo(tmp_path / "queue")
    run(["dvc", "repro"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "baseline"], root)
    gammas = {"g1": 1.0, "g9": 9.0}
    for name, gamma in gammas.items():
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"gamma={gamma}"], root)
    run(["dvc", "queue", "start", "-j", "2"], root)
    try:
        # Done means both experiments are in `dvc exp show`, not only that the queue looks idle: a task can be
        # between states, and workers idle for up to 10 s before they exit.
        deadline, results, status = time.time() + 900, {}, ""
        while time.time() < deadline and "Failed" not in status:
            status = run(["dvc", "queue", "status"], root).stdout
            results = queued_results(json.loads(run(["dvc", "exp", "show", "--json"], root).stdout))
            if set(gammas) <= set(results) and "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
    finally:
        run(["dvc", "queue", "stop"], root, check=False)  # no idle workers left on the shared CPU
    assert "Failed" not in status, status + run(["dvc", "queue", "logs", "g1"], root, check=False).stdout
    assert {name: gamma for name, (gamma, _, _) in results.items()} == gammas, results
    for _, metrics, _ in results.values():
        assert metrics["fid"] > 0 and 0 <= metrics["accuracy"] <= 1, results
    # Distinct by design: the samples differ with gamma (their Fréchet distances on 20 samples may tie).
    assert len({samples for _, _, samples in results.values()}) == 2, results


def queued_results(shown: list) -> dict[str, tuple[float, dict, str]]:
    """Experiment name -> (gamma, class_ddpm sample metrics, hash of its samples) from `dvc exp show --json`."""
    results = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            rev = exp["revs"][0]
            data = rev.get("data") or {}
            metrics = (data.get("metrics") or {}).get("reports/metrics/sample_class_ddpm.json")
            if metrics:  # a task still running has no metrics yet
                results[exp.get("name") or rev.get("name")] = (
                    data["params"]["params.yaml"]["data"]["gamma"], metrics["data"],
                    data["outs"]["reports/samples/class_ddpm"]["hash"])
    return results
