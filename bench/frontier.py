"""Quality per CPU-minute of training recipes: Fréchet distance ÷ the real-vs-real floor, legibility (and intended-class
accuracy for class models) against optimizer steps and training minutes, per model and recipe, side by side.

Each recipe is one `difflab.train.train` run of the params.yaml model entry with a few options changed; it is scored
part-way (at fractions of its steps) with the stages' sampler and n, so one run gives a whole curve. An EMA of the
weights does not change the run, so every run also scores EMAs of its weights at the decays of `--ema` (the same
`difflab.train.EMA` that `ema_decay` uses). Results accumulate in a JSON file; the plot is drawn from all of it.
Minutes are wall time of training alone (scoring excluded) on a shared machine: compare them only within one model.
Ends with `frontier: <per model, the best FD / floor and the minutes it took>`.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import torch

from difflab.core.families import build_model, make_family
from difflab.core.schedule import NoiseSchedule
from difflab.core.inference import load_for_inference
from difflab.core.weights import save_model
from difflab.data.mnist import load_mnist
from difflab.evaluation.classifier import load_classifier
from difflab.evaluation.metrics import reference, sample_scores
from difflab.pipeline.params import load
from difflab.pipeline.paths import Outputs
from difflab.pipeline.runtime import generator, seed_everything
from difflab.sampling.choice import SamplerChoice
from difflab.sampling.samplers import generate_in_batches
from difflab.training.loop import EMA, TrainConfig, train

# Per model, the recipes tried: options changed from its params.yaml entry (epochs set the longest budget scored;
# with lr_decay, ExponentialLR steps once per epoch, so a run's first epoch is exactly the one-epoch run).
RECIPES = {
    "time_fm": {
        "base": {"epochs": 2},
        "logit_normal": {"epochs": 2, "t_sampling": "logit_normal"},
        "warmup": {"epochs": 2, "warmup_steps": 250},
        "logit_normal+warmup": {"epochs": 2, "t_sampling": "logit_normal", "warmup_steps": 250},
        "logit_normal+warmup_seed1": {"epochs": 2, "t_sampling": "logit_normal", "warmup_steps": 250, "seed": 1},
        "lr3e-3": {"epochs": 2, "lr": 3e-3},
    },
    "time_ddpm": {
        "base": {},
        "min_snr5": {"min_snr_gamma": 5.0},
        "warmup": {"warmup_steps": 250},
        "min_snr5+warmup": {"min_snr_gamma": 5.0, "warmup_steps": 250},
        "min_snr5_seed1": {"min_snr_gamma": 5.0, "seed": 1},
        "min_snr5_4_epochs": {"min_snr_gamma": 5.0, "epochs": 4},
    },
    "class_fm": {
        "base": {},
        "logit_normal+warmup": {"t_sampling": "logit_normal", "warmup_steps": 100},
    },
    "class_ddpm": {
        "base": {},
        "min_snr5": {"min_snr_gamma": 5.0},
    },
}
# Options that are not model params: `seed` replaces params.yaml's seed (a second draw of the same recipe).
RUN_OPTIONS = ("seed",)


def score(model_file: Path, kind: str, params: dict, classifier, ref, schedule, n: int) -> dict:
    """Sample n images the way sample@<name> does and score them like its metrics JSON."""
    model, _ = load_for_inference(model_file, "cpu")
    family = make_family(kind, schedule)
    labels = torch.arange(n) % 10 if family.kind.class_conditional else None
    images = generate_in_batches(model, family, n, generator(torch.device("cpu"), params["seed"] + 1),
                                 params["sample"]["batch_size"], params["precision"], labels,
                                 gamma=params["gamma"], choice=SamplerChoice.from_params(params["sample"]))
    s = sample_scores(classifier, images, ref, labels)
    return {k: s[k] for k in ("fid", "fid_baseline", "legibility", "legibility_real", "accuracy") if k in s}


def run_recipe(name: str, recipe: str, options: dict, params: dict, x, y, classifier, ref, n: int,
               fractions: list[float], emas: list[float], work: Path) -> list[dict]:
    """Train one recipe, scoring the raw weights and each shadow EMA at the given fractions of its steps."""
    entry = {**params["models"][name], **{k: v for k, v in options.items() if k not in RUN_OPTIONS}}
    subset = entry.pop("train_subset")
    entry.pop("schedule")
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in entry.items() if k in known}, seed=options.get("seed", params["seed"]),
                      device="cpu",
                      precision=params["precision"])
    xs, ys = (x[:subset], y[:subset]) if subset else (x, y)
    schedule = NoiseSchedule.for_model(params, name)
    steps_per_epoch = -(-len(xs) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    at = sorted({max(1, round(f * total)) for f in fractions})
    seed_everything(cfg.seed)  # the initial weights train() starts from, where its own EMA starts too
    init = build_model(cfg.kind, cfg.hidden)
    shadows = {decay: EMA(init, decay) for decay in emas}
    rows, clock = [], {"scoring": 0.0}
    tmp = work / f"{name}-{recipe}"

    def on_step(step: int, model: torch.nn.Module) -> None:
        for ema in shadows.values():
            ema.update(model)
        if step not in at:
            return
        began = time.perf_counter()
        minutes = (began - start - clock["scoring"]) / 60
        variants = {"": model, **{f"+ema{d:g}": e.model for d, e in shadows.items()}}
        for suffix, weights in variants.items():
            f = tmp / f"step{step}{suffix}.safetensors"
            save_model(f, weights, cfg.kind)
            s = score(f, cfg.kind, params, classifier, ref, schedule, n)
            row = {"model": name, "recipe": recipe + suffix, "options": options, "steps": step,
                   "epochs": round(step / steps_per_epoch, 3), "minutes": round(minutes, 3), **s}
            rows.append(row)
            extra = f"{s['accuracy']:>7.3f}" if "accuracy" in s else f"{'':>7}"
            print(f"{name:<11}{recipe + suffix:<30}{step:>6}{minutes:>8.2f}{s['fid']:>9.1f}"
                  f"{s['fid'] / s['fid_baseline']:>8.2f}{s['legibility']:>7.3f}{extra}", flush=True)
        clock["scoring"] += time.perf_counter() - began

    out = Outputs(tmp / "model.safetensors", tmp / "snapshots", tmp / "live", tmp / "ckpt")
    start = time.perf_counter()
    train(f"{name}:{recipe}", cfg, xs, ys, out, schedule, on_step=on_step)
    return rows


def plot(results: list[dict], path: Path) -> None:
    """Per model: FD / floor and legibility against training minutes, and FD / floor against optimizer steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    models = list(dict.fromkeys(r["model"] for r in results))
    fig, axes = plt.subplots(len(models), 3, figsize=(15, 3.6 * len(models)), squeeze=False)
    for row, name in zip(axes, models):
        mine = [r for r in results if r["model"] == name]
        bases = list(dict.fromkeys(r["recipe"].split("+ema")[0] for r in mine))
        for recipe in dict.fromkeys(r["recipe"] for r in mine):
            pts = sorted((r for r in mine if r["recipe"] == recipe), key=lambda r: r["steps"])
            style = dict(ls="--" if "+ema" in recipe else "-", color=f"C{bases.index(recipe.split('+ema')[0])}")
            for ax, xkey, ykey in ((row[0], "minutes", "ratio"), (row[1], "minutes", "legibility"),
                                   (row[2], "steps", "ratio")):
                ys = [r["fid"] / r["fid_baseline"] if ykey == "ratio" else r[ykey] for r in pts]
                ax.plot([r[xkey] for r in pts], ys, marker="o", ms=3, label=recipe, **style)
        row[0].set(title=f"{name}: FD / real-vs-real floor", xlabel="training minutes (shared CPU, 1 thread)")
        row[1].set(title=f"{name}: legibility (real digits {mine[0]['legibility_real']:.2f})",
                   xlabel="training minutes", ylim=(0, 1))
        row[2].set(title=f"{name}: FD / floor against optimizer steps", xlabel="optimizer steps")
        target = 2.5 if name.startswith("class_") else 4.0
        for ax in (row[0], row[2]):
            ax.axhline(target, color="k", lw=0.8, ls=":")
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        if not name.startswith("class_"):
            row[1].axhline(0.8, color="k", lw=0.8, ls=":")
        row[2].legend(fontsize=7, title="dashed: EMA of the same run", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="time_fm base only, 2,000 digits, n = 100 (~1 minute)")
    ap.add_argument("--runs", nargs="*", default=None,
                    help="model:recipe pairs to train (default: every recipe of time_fm and time_ddpm)")
    ap.add_argument("--mnist", default="data/mnist", help="MNIST root (torchvision layout), as fetch_data writes")
    ap.add_argument("--classifier", default="models/classifier.safetensors")
    ap.add_argument("--results", default="bench/frontier.json", help="accumulated results (JSON)")
    ap.add_argument("--plot", default="bench/frontier.png")
    ap.add_argument("--ema", nargs="*", type=float, default=[0.999], help="shadow EMA decays scored in every run")
    ap.add_argument("--fractions", nargs="*", type=float, default=[0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = load()
    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.is_file() else []
    if not args.plot_only:
        runs = args.runs or [f"{m}:{r}" for m in ("time_fm", "time_ddpm") for r in RECIPES[m]]
        n = params["sample"]["n_fid"]
        if args.quick:
            runs, n = ["time_fm:base"], 100
            for m in params["models"].values():
                m["train_subset"] = 2000
        x, y = load_mnist(args.mnist, train=True)
        classifier = load_classifier(args.classifier, "cpu")
        ref = reference(classifier, args.mnist, n)
        print(f"threads {torch.get_num_threads()}, n = {n}, real-vs-real FD floor {ref.baseline:.2f}, real legibility "
              f"{ref.legibility_real:.3f}; sampler {SamplerChoice.from_params(params['sample'])}")
        print(f"{'model':<11}{'recipe':<30}{'steps':>6}{'minutes':>8}{'FD':>9}{'/floor':>8}{'legib':>7}{'acc':>7}")
        with tempfile.TemporaryDirectory() as work:
            for run in runs:
                name, recipe = run.split(":")
                rows = run_recipe(name, recipe, RECIPES[name][recipe], params, x, y, classifier, ref, n,
                                  args.fractions, args.ema, Path(work))
                if not args.quick:
                    results = [r for r in results if not (r["model"] == name and r["recipe"].split("+ema")[0]
                                                          == recipe)] + rows
                    results_path.write_text(json.dumps(results, indent=1) + "\n")
                else:
                    results = rows
    if not args.quick:
        plot(results, Path(args.plot))
        print(f"plot: {args.plot}")
    best = {}
    for r in results:
        ratio = r["fid"] / r["fid_baseline"]
        if r["model"] not in best or ratio < best[r["model"]][0]:
            best[r["model"]] = (ratio, r)
    print("frontier: " + "; ".join(f"{m} {ratio:.2f}x floor, legibility {r['legibility']:.2f} at {r['minutes']:.1f} "
                                   f"min ({r['recipe']}, {r['steps']} steps)" for m, (ratio, r) in best.items()))


if __name__ == "__main__":
    main()
