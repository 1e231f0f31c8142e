"""End to end: the whole DVC pipeline on tiny params in a scratch git repo.

(a) every stage runs and writes its outs, (b) a second `dvc repro` runs nothing, (c) `dvc exp run -S gamma=...`
re-runs exactly the stages that read gamma and their downstream stages, never training, (d) `dvc repro -f`
reproduces byte-identical models and metrics, (e) every stage declares exactly the params it reads (recorded while
the pipeline runs), so a params change invalidates exactly the stages that read it, (f) metrics record the path
that ran.
"""
import hashlib
import json
import re

import pytest
import yaml
from conftest import run, scratch_repo

from difflab.pipeline.params import TRACE_ENV

pytestmark = pytest.mark.e2e

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
    first = run(["dvc", "repro"], root, env={TRACE_ENV: str(root.parent / "params_read.jsonl")})
    return root, first.stdout


def covered(key: str, by: str) -> bool:
    return key == by or key.startswith(by + ".")


def test_every_stage_declares_exactly_the_params_it_reads(pipeline):
    """Keys each stage read while the pipeline ran (params.load traces them) against the keys dvc.lock records
    for it, both ways: too few means stale results, too many means needless re-runs."""
    root, _ = pipeline
    reads: dict[str, set[str]] = {}
    for line in (root.parent / "params_read.jsonl").read_text().splitlines():
        entry = json.loads(line)
        reads.setdefault(" ".join(entry["argv"]), set()).update(entry["reads"])
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    problems = []
    for name, stage in lock.items():
        declared = set(stage.get("params", {}).get("params.yaml", {}))
        module, *args = stage["cmd"].removeprefix("python -m ").split()
        script = " ".join([module.replace(".", "/") + ".py", *args])  # params.load records the module's file
        assert script in reads, f"{name} ({script}) recorded no params reads; does it call difflab.params.load()?"
        read = reads[script]
        problems += [f"{name}: reads {k} but does not declare it" for k in sorted(read)
                     if not any(covered(k, d) for d in declared)]
        problems += [f"{name}: declares {d} but never reads it" for d in sorted(declared)
                     if not any(covered(k, d) for k in read)]
    assert not problems, "dvc.yaml params are out of date:\n" + "\n".join(problems)


def changed_stages(root, edit) -> set[str]:
    """The stages `dvc status` finds invalidated by one params edit (the edit is undone afterwards)."""
    path = root / "params.yaml"
    saved = path.read_text()
    params = yaml.safe_load(saved)
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        return set(json.loads(run(["dvc", "status", "--json"], root).stdout or "{}"))
    finally:
        path.write_text(saved)


def test_a_params_change_invalidates_exactly_its_readers(pipeline):
    root, _ = pipeline
    params = yaml.safe_load((root / "params.yaml").read_text())
    ddpm = {n for n, m in params["models"].items() if m["kind"].endswith("_ddpm")}
    guided = {n for n, s in params["sampling"].items() if s["guidance"] == "gamma"}
    assert ddpm and guided
    assert changed_stages(root, lambda p: p["ddpm"].update(num_ts=p["ddpm"]["num_ts"] - 1)) == (
        {f"train@{n}" for n in ddpm} | {f"sample@{n}" for n in ddpm & set(params["sampling"])}
        | {"guidance_sweep", "part_a", "report"})  # the MNIST backbone is built with the schedule; its prompts are not
    assert changed_stages(root, lambda p: p["models"]["time_fm"].update(epochs=3)) == {
        "train@time_fm", "sample@time_fm", "report"}
    assert changed_stages(root, lambda p: p.update(gamma=p["gamma"] + 1)) == {f"sample@{n}" for n in guided} | {
        "report"}


def test_metrics_record_the_path_that_ran(pipeline):
    root, _ = pipeline
    for path in [*root.glob("reports/metrics/*.json"), *root.glob("reports/train/*/metrics.json")]:
        run_info = json.loads(path.read_text())["run"]
        assert run_info["device"] == "cpu" and run_info["precision"] in ("bf16", "fp32"), path
        assert run_info["torch"] and run_info["threads"] >= 1, path


def test_every_stage_runs_and_writes_its_outs(pipeline):
    root, out = pipeline
    names = set(stages(root))
    assert names and ran(out) == names
    assert run(["dvc", "status", "--json"], root).stdout.strip() in ("{}", "")
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    for name in names:
        for o in lock[name].get("outs", []):
            assert (root / o["path"]).exists(), f"{name} did not write {o['path']}"
    assert any(root.glob("reports/samples/class_ddpm/live/plots/images/samples/*.png"))
    assert (root / "reports/samples/class_ddpm/process.gif").stat().st_size > 0


def test_the_cfg_sweep_scores_and_plots_every_scale_with_and_without_the_guidance_interval(pipeline):
    root, _ = pipeline
    params = yaml.safe_load((root / "params.yaml").read_text())
    sweep = json.loads((root / "reports/metrics/guidance.json").read_text())
    assert sweep["interval"] == params["guidance_sweep"]["interval"]
    for model in ("class_ddpm", "class_fm"):
        assert {f"gamma_{g:g}" for g in params["guidance_sweep"]["gammas"]} == set(sweep[model])
        assert all({"fid", "accuracy", "cas"} <= set(scores["interval"]) for scores in sweep[model].values())
    shown = json.loads(run(["dvc", "plots", "show", "--json"], root).stdout)
    for title in ("CFG sweep, intended-class accuracy", "CFG sweep, Fréchet distance"):
        assert not [e for e in shown.get("errors", []) if e["name"] == title], shown["errors"]
        drawn = {row["filename"] for plot in shown["data"][title] for row in plot["content"]["data"]["values"]}
        assert drawn == {"class_ddpm.tsv", "class_ddpm_interval.tsv", "class_fm.tsv", "class_fm_interval.tsv"}


def test_dvc_plots_list_every_generative_models_samples_by_step(pipeline):
    """`dvc plots show` lists sample@'s DVCLive grid at every training snapshot's step, for every sampled model."""
    from difflab.core.weights import list_snapshots

    root, _ = pipeline
    shown = json.loads(run(["dvc", "plots", "show", "--json", "-o", str(root.parent / "dvc_plots")], root).stdout)
    for name in yaml.safe_load((root / "params.yaml").read_text())["sampling"]:
        folder = f"reports/samples/{name}/live/plots/images/samples/"
        steps = sorted(int(path.removeprefix(folder).removesuffix(".png")) for path, entries in shown["data"].items()
                       if path.startswith(folder) and entries[0]["type"] == "image")
        assert steps == [s.step for s in list_snapshots(root / "models" / "snapshots" / name)], name
        assert len(steps) == 3 + 2, name  # three steps of epoch 1 (4 steps an epoch), then epochs 1 and 2


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
