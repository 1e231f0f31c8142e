"""Sample quality against cost: Fréchet distance, intended-class accuracy and wall time per sampler and step count,
on the pipeline's trained class-conditioned models (run `dvc repro` first).

First measures the sampling forward pass (CFG rows in one batch): fp32 reference vs the fast path the stages use.
Ends with `speedup: <300-step DDPM time / DPM-Solver++ time at the fewest steps within 10% of its FD>`.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from difflab.core.inference import load_for_inference
from difflab.core.weights import load_model
from difflab.evaluation.classifier import load_classifier
from difflab.evaluation.metrics import reference, sample_scores
from difflab.pipeline import paths
from difflab.pipeline.params import load
from difflab.pipeline.runtime import autocast, generator, seed_everything
from difflab.sampling.choice import SamplerChoice
from difflab.sampling.samplers import generate_in_batches, sampling_family, with_cfg


def run(model, family, choice, n, params, classifier, ref) -> dict:
    labels = torch.arange(n) % 10
    start = time.perf_counter()
    images = generate_in_batches(model, family, n, generator(torch.device("cpu"), params["seed"] + 1),
                                 params["sample"]["batch_size"], params["precision"], labels, gamma=params["gamma"],
                                 choice=choice)
    seconds = time.perf_counter() - start
    scores = sample_scores(classifier, images, ref, labels)
    return {"seconds": seconds, "fid": scores["fid"], "accuracy": scores["accuracy"]}


def forward_paths(path: Path, params: dict, seconds: float) -> float:
    """CFG forward throughput (samples/s) of the saved class model: fp32 with BatchNorm, 500 samples (1000 rows) per
    forward (the reference), against the fast path: folded BatchNorm, channels-last, bf16, `sample.batch_size`."""
    fast, _ = load_for_inference(path, "cpu")
    plain, _ = load_model(path, "cpu")
    rates = {}
    for label, model, batch, precision in (("reference", plain, 500, "fp32"),
                                           ("fast", fast, params["sample"]["batch_size"], "auto")):
        f = with_cfg(model, torch.arange(batch) % 10, params["gamma"])
        x, t = torch.randn(batch, 1, 28, 28), torch.full((batch,), 0.5)
        with torch.inference_mode(), autocast(torch.device("cpu"), precision):
            f(x, t)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                f(x, t)
                n += batch
        rates[label] = n / (time.perf_counter() - start)
        print(f"CFG forward, {label:<9} ({precision}, batch {batch}): {rates[label]:.0f} samples/s")
    return rates["fast"] / rates["reference"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer samples and configurations (< 1 minute)")
    args = ap.parse_args()
    params = load()
    seed_everything(params["seed"])
    n = 80 if args.quick else 1000
    classifier = load_classifier(paths.CLASSIFIER, "cpu")
    ref = reference(classifier, paths.MNIST, n)
    T = params["ddpm"]["num_ts"]
    ddpm_grid = [("ddpm", 0), ("ddim", 30), ("dpmsolver", 10), ("dpmsolver", 20), ("dpmsolver", 30),
                 ("dpmsolver_sde", 30)]
    flow_grid = [("euler", 10), ("euler", 50), ("heun", 10), ("heun", 25)]
    if args.quick:
        ddpm_grid, flow_grid = [("ddpm", 0), ("dpmsolver", 20)], [("euler", 50), ("heun", 10)]
    forward_speedup = forward_paths(paths.model_file("class_ddpm"), params, 1.5 if args.quick else 10.0)
    print(f"forward speedup (fast path / reference): {forward_speedup:.2f}")
    print(f"n = {n} samples per row, CFG gamma = {params['gamma']}, real-vs-real FD floor {ref.baseline:.3f}")
    print(f"{'model':<12}{'sampler':<11}{'steps':>6}{'NFE':>6}{'FD':>9}{'acc':>7}{'seconds':>9}")
    results = {}
    for name, grid in (("class_ddpm", ddpm_grid), ("class_fm", flow_grid)):
        model, _ = load_for_inference(paths.model_file(name), "cpu")
        family = sampling_family(params, name)
        for sampler, steps in grid:
            choice = (SamplerChoice(ddpm_sampler=sampler, ddpm_steps=steps) if family.kind.family == "ddpm"
                      else SamplerChoice(flow_sampler=sampler, flow_steps=steps))
            r = run(model, family, choice, n, params, classifier, ref)
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
