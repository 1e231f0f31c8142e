"""Sample quality against cost: Fréchet distance, intended-class accuracy and wall time per sampler and step count,
on the pipeline's trained class-conditioned models (run `dvc repro` first, or pass --mnist / --classifier / --models).

Choosing a sampler is a choice, so it is made on validation digits (MNIST training digits 50,000-59,999) with a
sampling seed of its own (params `seed` + 1000), never on the test digits and seed the pipeline reports.
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
from difflab.pipeline.splits import VALIDATION
from difflab.sampling.choice import SamplerChoice
from difflab.sampling.samplers import generate_in_batches, sampling_family, with_cfg

SEED_OFFSET = 1000  # validation sampling seed = params seed + this, apart from the pipeline's (seed + 1, seed + 2)


def run(model, family, choice, n, params, classifier, ref) -> dict:
    labels = torch.arange(n) % 10
    start = time.perf_counter()
    images = generate_in_batches(model, family, n, generator(torch.device("cpu"), params["seed"] + SEED_OFFSET),
                                 params["sample"]["batch_size"], params["precision"], labels, gamma=params["gamma"],
                                 choice=choice)
    seconds = time.perf_counter() - start
    scores = sample_scores(classifier, images, ref, labels)
    return {"seconds": seconds, **{k: scores[k] for k in ("fid", "fid_lo", "fid_hi", "accuracy")}}


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


def evaluations(choice: SamplerChoice, family: str, num_ts: int) -> int:
    """Model evaluations per sample (a CFG evaluation is one batched forward): Heun's n steps take 2n - 1."""
    steps = choice.steps(family, num_ts)
    return 2 * steps - 1 if family == "flow" and choice.flow_sampler == "heun" else steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="80 samples, four configurations (about a minute)")
    ap.add_argument("--mnist", default=str(paths.MNIST), help="MNIST root (torchvision layout), as fetch_data writes")
    ap.add_argument("--classifier", default=str(paths.CLASSIFIER))
    ap.add_argument("--models", default=str(paths.MODELS), help="directory of class_ddpm / class_fm .safetensors")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = load()
    seed_everything(params["seed"])
    n = 80 if args.quick else 1000
    classifier = load_classifier(args.classifier, "cpu")
    ref = reference(classifier, args.mnist, n, split=VALIDATION, precision=params["precision"])
    T = params["ddpm"]["num_ts"]
    spec = SamplerChoice("ddpm", 0)  # the spec's ancestral chain, sigma^2 = beta_t
    ddpm_grid = [spec, SamplerChoice("ddpm", 0, ddpm_variance="posterior"), SamplerChoice("ddim", 30),
                 *(SamplerChoice("dpmsolver", s) for s in (10, 20, 30)), SamplerChoice("dpmsolver_sde", 30)]
    flow_grid = [SamplerChoice(flow_sampler=s, flow_steps=k) for s, k in (("euler", 10), ("euler", 50),
                                                                          ("heun", 10), ("heun", 25))]
    if args.quick:
        ddpm_grid, flow_grid = [spec, SamplerChoice("dpmsolver", 20)], flow_grid[1:3]
    models = Path(args.models)
    forward_speedup = forward_paths(models / "class_ddpm.safetensors", params, 1.5 if args.quick else 10.0)
    print(f"forward speedup (fast path / reference): {forward_speedup:.2f}")
    floor = ref.ceilings["fid"]
    print(f"n = {n} samples per row against {ref.split} digits, sampling seed {params['seed'] + SEED_OFFSET}, "
          f"threads {torch.get_num_threads()}, CFG gamma = {params['gamma']}, real-vs-real FD floor "
          f"{floor.value:.2f} [{floor.lo:.2f}, {floor.hi:.2f}]")
    print(f"{'model':<12}{'sampler':<62}{'NFE':>5}{'FD':>8}{'FD 95% interval':>18}{'acc':>7}{'seconds':>9}")
    results = []
    for name, grid in (("class_ddpm", ddpm_grid), ("class_fm", flow_grid)):
        model, _ = load_for_inference(models / f"{name}.safetensors", "cpu")
        family = sampling_family(params, name)
        for choice in grid:
            r = run(model, family, choice, n, params, classifier, ref)
            results.append((name, choice, r))
            interval = f"[{r['fid_lo']:.1f}, {r['fid_hi']:.1f}]"
            print(f"{name:<12}{choice.describe(family.kind.family, T):<62}"
                  f"{evaluations(choice, family.kind.family, T):>5}{r['fid']:>8.1f}{interval:>18}"
                  f"{r['accuracy']:>7.3f}{r['seconds']:>9.1f}", flush=True)
    ref_row = next(r for name, choice, r in results if choice == spec)
    fast = sorted((choice.ddpm_steps, r) for name, choice, r in results
                  if choice.ddpm_sampler == "dpmsolver" and name == "class_ddpm" and r["fid"] <= 1.1 * ref_row["fid"])
    if fast:
        steps, r = fast[0]
        print(f"DPM-Solver++ at {steps} steps is within 10% of the {T}-step DDPM FD "
              f"({r['fid']:.1f} vs {ref_row['fid']:.1f})")
        print(f"speedup: {ref_row['seconds'] / r['seconds']:.2f}")
    else:
        print("no DPM-Solver++ setting reached within 10% of the DDPM FD")
        print("speedup: 0")


if __name__ == "__main__":
    main()
