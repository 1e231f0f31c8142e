"""What samples on a slider cost (issue 23): train@'s extra snapshots inside the first epoch and sample@'s extra grids,
against each model's training time, measured in one run.

Each sampled model of params.yaml trains exactly as train@ does (stages/train.py, in a scratch directory whose
data/mnist is `--mnist`), with every save_model call timed in place, so the extra saves (the step_XXXXXX snapshots)
are timed inside the run they slow down; then each extra snapshot is rendered as sample@ renders it
(`SampleRun.log_grid`: load and fold the weights, sample the fixed-noise grid with the configured sampler and CFG,
draw it, log it with DVCLive). Ends with `cost: <extra saves + extra grids> / training time` over all models.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from difflab.core.weights import list_snapshots
from difflab.part_b.samples import SampleRun
from difflab.pipeline import paths
from difflab.pipeline.params import load
from difflab.pipeline.runtime import resolve_device
from difflab.training import loop

REPO = Path(__file__).resolve().parents[1]


def timed_saves(log: list[tuple[str, float]]):
    """save_model, recording (file name, seconds) of every call."""
    save = loop.save_model

    def timed(path, *args, **kw):
        began = time.perf_counter()
        save(path, *args, **kw)
        log.append((Path(path).name, time.perf_counter() - began))
    return timed


def measure(name: str, params: dict) -> dict:
    """Train one model as train@ does, then render its in-epoch snapshots as sample@ does; seconds of each part."""
    from dvclive import Live

    saves: list[tuple[str, float]] = []
    loop.save_model = timed_saves(saves)
    sys.argv = ["stages/train.py", name]
    began = time.perf_counter()
    runpy.run_path(str(REPO / "stages" / "train.py"), run_name="__main__")
    train_s = time.perf_counter() - began
    run, device = SampleRun(name, params), resolve_device(params["device"])
    live = Live("bench-live", dvcyaml=False, save_dvc_exp=False)
    renders = []
    for snap in list_snapshots(paths.snapshot_dir(name)):
        if snap.whole_epoch is None:
            began = time.perf_counter()
            run.log_grid(live, snap, device)
            renders.append(time.perf_counter() - began)
    extra = [s for f, s in saves if f.startswith("step_")]
    return {"train": train_s, "saves": extra, "epoch_saves": [s for f, s in saves if f.startswith("epoch_")],
            "renders": renders}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="time_fm and class_fm on their first 2,000 digits")
    ap.add_argument("--models", nargs="*", default=None, help="models to measure (default: every one of `sampling`)")
    ap.add_argument("--mnist", default="data/mnist", help="MNIST root (torchvision layout), as fetch_data writes")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default, as the stages run)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = load(args.params)
    names = args.models or (["time_fm", "class_fm"] if args.quick else list(params["sampling"]))
    if args.quick:
        for name in names:
            params["models"][name]["train_subset"] = 2000
    mnist = Path(args.mnist).resolve()
    print(f"{'model':<21}{'steps':>7}{'train s':>9}{'saves':>7}{'save s':>8}{'(epoch save s)':>15}{'grids':>7}"
          f"{'grid s':>8}{'saves %':>9}{'grids %':>9}")
    total = {"train": 0.0, "saves": 0.0, "renders": 0.0}
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "data").mkdir()
        os.symlink(mnist, Path(work) / "data" / "mnist")
        (Path(work) / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        os.chdir(work)
        for name in names:
            m = measure(name, params)
            steps = json.loads(Path(f"reports/train/{name}/metrics.json").read_text())["step"]
            save_s, render_s = sum(m["saves"]), sum(m["renders"])
            epoch_save = sum(m["epoch_saves"]) / max(1, len(m["epoch_saves"]))
            print(f"{name:<21}{steps:>7}{m['train']:>9.1f}{len(m['saves']):>7}{save_s:>8.3f}{epoch_save:>15.3f}"
                  f"{len(m['renders']):>7}{render_s:>8.2f}{100 * save_s / m['train']:>8.2f}%"
                  f"{100 * render_s / m['train']:>8.2f}%", flush=True)
            total["train"] += m["train"]
            total["saves"] += save_s
            total["renders"] += render_s
    print(f"cost: {(total['saves'] + total['renders']) / total['train']:.4f} of training time "
          f"(saves {total['saves']:.2f} s + grids {total['renders']:.1f} s / training {total['train']:.0f} s)")


if __name__ == "__main__":
    main()
