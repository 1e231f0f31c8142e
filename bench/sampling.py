"""Sample quality against cost: Fréchet distance, intended-class accuracy and wall time per sampler and step count,
on the pipeline's trained class-conditioned models (run `dvc repro` first).

Ends with `speedup: <300-step DDPM time / DPM-Solver++ time at the fewest steps within 10% of its FD>`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from difflab import paths  # noqa: E402
from difflab.classifier import load_classifier  # noqa: E402
from difflab.metrics import reference, sample_scores  # noqa: E402
from difflab.params import load  # noqa: E402
from difflab.runtime import generator, seed_everything  # noqa: E402
from difflab.samplers import SamplerChoice, generate_in_batches  # noqa: E402
from difflab.schedule import DDPMSchedule  # noqa: E402
from difflab.weights import load_model  # noqa: E402


def run(model, kind, choice, n, params, classifier, ref, schedule) -> dict:
    labels = torch.arange(n) % 10
    start = time.perf_counter()
    images = generate_in_batches(model, kind, n, generator(torch.device("cpu"), params["seed"] + 1),
                                 params["sample"]["batch_size"],
                                 params["precision"], labels, schedule=schedule, gamma=params["gamma"], choice=choice)
    seconds = time.perf_counter() - start
    scores = sample_scores(classifier, images, ref, labels)
    return {"seconds": seconds, "fid": scores["fid"], "accuracy": scores["accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer samples and configurations (< 1 minute)")
    args = ap.parse_args()
    params = load()
    seed_everything(params["seed"])
    n = 100 if args.quick else 1000
    classifier = load_classifier(paths.CLASSIFIER, "cpu")
    ref = reference(classifier, paths.MNIST, n)
    schedule = DDPMSchedule.linear(**params["ddpm"])
    T = schedule.num_ts
    ddpm_grid = [("ddpm", 0), ("ddim", 30), ("dpmsolver", 10), ("dpmsolver", 20), ("dpmsolver", 30),
                 ("dpmsolver_sde", 30)]
    flow_grid = [("euler", 10), ("euler", 50), ("heun", 10), ("heun", 25)]
    if args.quick:
        ddpm_grid, flow_grid = [("ddpm", 0), ("dpmsolver", 20)], [("euler", 50), ("heun", 10)]
    print(f"n = {n} samples per row, CFG gamma = {params['gamma']}, real-vs-real FD floor {ref.baseline:.3f}")
    print(f"{'model':<12}{'sampler':<11}{'steps':>6}{'NFE':>6}{'FD':>9}{'acc':>7}{'seconds':>9}")
    results = {}
    for name, grid in (("class_ddpm", ddpm_grid), ("class_fm", flow_grid)):
        model, kind = load_model(paths.model_file(name), "cpu")
        for sampler, steps in grid:
            choice = (SamplerChoice(ddpm_sampler=sampler, ddpm_steps=steps) if kind.endswith("_ddpm")
                      else SamplerChoice(flow_sampler=sampler, flow_steps=steps))
            r = run(model, kind, choice, n, params, classifier, ref, schedule)
            nfe = (steps or T) * (2 if sampler == "heun" else 1) - (1 if sampler == "heun" else 0)
            results[(name, sampler, steps)] = r
            print(f"{name:<12}{sampler:<11}{steps or T:>6}{nfe:>6}{r['fid']:>9.3f}{r['accuracy']:>7.3f}"
                  f"{r['seconds']:>9.1f}", flush=True)
    ref_row = results[("class_ddpm", "ddpm", 0)]
    fast = [(s, r) for (m, sampler, s), r in results.items() if m == "class_ddpm" and sampler == "dpmsolver"
            and r["fid"] <= 1.1 * ref_row["fid"]]
    if fast:
        steps, r = min(fast)
        print(f"DPM-Solver++ at {steps} steps is within 10% of the {T}-step DDPM FD "
              f"({r['fid']:.3f} vs {ref_row['fid']:.3f})")
        print(f"speedup: {ref_row['seconds'] / r['seconds']:.2f}")
    else:
        print("no DPM-Solver++ setting reached within 10% of the DDPM FD")
        print("speedup: 0")


if __name__ == "__main__":
    main()
