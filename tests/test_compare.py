"""DVC-native comparison on tiny params: `gamma` experiments differ in `dvc exp show`, and two committed runs
differ in `dvc metrics diff`, while the models are never retrained for it."""
import json

import pytest
import yaml
from conftest import run, scratch_repo

pytestmark = pytest.mark.e2e

TARGET = "sample@class_ddpm"
METRICS = "reports/metrics/sample_class_ddpm.json"
SAMPLES = "reports/samples/class_ddpm"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A scratch repo with the pipeline run once and committed (an experiment commits every output)."""
    with pytest.MonkeyPatch.context() as mp:
        # Tiny models gain nothing from a second thread, and OpenMP threads on a busy shared CPU stall badly.
        mp.setenv("OMP_NUM_THREADS", "1")
        root = scratch_repo(tmp_path_factory.mktemp("compare") / "repo")
        run(["dvc", "repro"], root)
        run(["git", "add", "-A"], root)
        run(["git", "commit", "-qm", "gamma 5"], root)
        yield root


def runs_in(exp_show: list) -> dict[str, tuple[float, dict, str]]:
    """Experiment name -> (gamma, sample metrics, hash of the sample outputs), from `dvc exp show --json`."""
    found = {}

    def walk(node):
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, dict) and node.get("name") and METRICS in (data.get("metrics") or {}):
                gamma = data["params"]["params.yaml"]["data"]["gamma"]
                found[node["name"]] = (gamma, data["metrics"][METRICS]["data"], data["outs"][SAMPLES]["hash"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(exp_show)
    return found


def test_gamma_experiments_show_their_own_params_metrics_and_samples(repo):
    for gamma in (1, 7):
        out = run(["dvc", "exp", "run", "-n", f"gamma-{gamma}", "-S", f"gamma={gamma}", TARGET], repo).stdout
        assert "Running stage 'train@" not in out and "Running stage 'classifier'" not in out, out
    runs = runs_in(json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout))
    (g1, m1, s1), (g7, m7, s7) = runs["gamma-1"], runs["gamma-7"]
    assert (g1, g7) == (1, 7)
    for m in (m1, m7):
        assert {"fid", "fid_baseline", "n", "accuracy", "per_class"} <= set(m) and m["fid"] > 0
    assert m1["fid_baseline"] == m7["fid_baseline"]  # the real-vs-real floor does not depend on gamma
    # What differs by design is the samples; on 20 samples from tiny models their Fréchet distances may tie.
    assert s1 != s7


def test_metrics_diff_between_commits(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["gamma"] = 7.0
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro", TARGET], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "gamma 7"], repo)
    diff = json.loads(run(["dvc", "metrics", "diff", "HEAD~1", "--all", "--json"], repo).stdout)
    assert {"old", "new"} <= set(diff[METRICS]["fid"]), diff  # both commits' values, equal or not
    assert diff[METRICS]["fid_baseline"]["old"] == diff[METRICS]["fid_baseline"]["new"]
    changed = json.loads(run(["dvc", "diff", "HEAD~1", "--json"], repo).stdout)["modified"]
    assert f"{SAMPLES}/" in {m["path"] for m in changed}, changed
    params_diff = json.loads(run(["dvc", "params", "diff", "HEAD~1", "--json"], repo).stdout)
    assert (params_diff["params.yaml"]["gamma"]["old"], params_diff["params.yaml"]["gamma"]["new"]) == (5.0, 7.0)
