"""Quality per CPU-minute of training recipes, chosen on validation: Fréchet distance ÷ the real-vs-real floor,
legibility, precision, recall (and intended-class accuracy and CAS for class models) against optimizer steps and
training minutes, per model and recipe, side by side, with their spread.

The protocol keeps choices apart from what the report shows (issue 21): every score here is against the validation
digits (MNIST training digits 50,000-59,999, which no CPU-default model trains on and the report never shows), with
sampling seeds distinct from the pipeline's, and the floor and ceilings from held-out digits the scoring classifier
never saw. Each recipe is one `difflab.training.loop.train` run of the params.yaml model entry with a few options
changed, repeated over `--train-seeds`; it is scored part-way (at `--fractions` of its steps) with the stages' sampler
and n, over `--sample-seeds` sampling seeds at the last fraction (the first seed elsewhere). A row gives the mean over
sampling seeds, their spread (max - min) and the bootstrap half-width of the first seed; the summary gives, per recipe,
the mean over training seeds and the range they span. A difference between recipes counts only when it is larger than
both spreads. Sampling-only variants (a guidance interval) are scored on the same weights, as are shadow EMAs.
Minutes are wall time of training alone (scoring excluded) on a shared machine: compare them within one run.
Ends with `frontier: <per model, the best FD / floor and the minutes it took>`.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

import torch

from difflab.core import unet as unet_module
from difflab.core.families import build_model, make_family
from difflab.core.inference import load_for_inference
from difflab.core.schedule import NoiseSchedule
from difflab.core.weights import save_model
from difflab.data.mnist import load_mnist
from difflab.evaluation.classifier import load_classifier
from difflab.evaluation.metrics import reference, sample_scores
from difflab.pipeline.params import load, validate
from difflab.pipeline.paths import Outputs
from difflab.pipeline.runtime import generator, seed_everything
from difflab.pipeline.splits import VALIDATION, train_range
from difflab.sampling.choice import SamplerChoice
from difflab.sampling.samplers import generate_in_batches
from difflab.training.loop import EMA, TrainConfig, train

VALIDATION_SEED = 1000  # sampling seeds 1000, 1001, ...: never the pipeline's (`seed` + 1 for sample@)
METRICS = ("fid", "legibility", "precision", "recall", "accuracy", "cas")

# Per model, the recipes tried: options changed from its params.yaml entry. `ddpm` overrides the params' ddpm
# section (the noise schedule); `bf16_embeddings` runs the time/class FC blocks under bf16 autocast as the code did
# before issue 22 (bench only), to measure what fp32 embeddings buy.
# The time_ddpm and time_fm rows of frontier.json were measured against params.yaml before 9fd9c19 (time_ddpm 1 epoch
# without EMA, time_fm 2 epochs); their `default` rows are stored as `default_before`, and `epochs3+ema_power` /
# `epochs3` are the entries params.yaml has since.
RECIPES = {
    "time_ddpm": {
        "default": {},
        "bf16_embeddings": {"bf16_embeddings": True},
        "spec_loss": {"min_snr_gamma": 0.0},
        "v_zero_snr": {"prediction": "v", "ddpm": {"zero_terminal_snr": True}},
        "v_zero_snr_spec_loss": {"prediction": "v", "ddpm": {"zero_terminal_snr": True}, "min_snr_gamma": 0.0},
        "lr_decay_step": {"lr_decay": True, "lr_decay_every": "step"},
        "ema_power": {"ema_decay": 0.999, "ema_power": 0.75},
        "v_zero_snr+decay_step+ema_power": {"prediction": "v", "ddpm": {"zero_terminal_snr": True}, "lr_decay": True,
                                            "lr_decay_every": "step", "ema_decay": 0.999, "ema_power": 0.75},
        "epochs2": {"epochs": 2},
        "epochs2+ema_power": {"epochs": 2, "ema_decay": 0.999, "ema_power": 0.75},
        "epochs3+ema_power": {"epochs": 3, "ema_decay": 0.999, "ema_power": 0.75},
    },
    "time_fm": {
        "default": {},
        "bf16_embeddings": {"bf16_embeddings": True},
        "spec_recipe": {"warmup_steps": 0, "t_sampling": "uniform", "ema_decay": 0.0},
        "no_ema": {"ema_decay": 0.0},
        "lr_decay_step": {"lr_decay_every": "step"},
        "ema_power": {"ema_power": 0.75},
        "decay_step+ema_power": {"lr_decay_every": "step", "ema_power": 0.75},
        "epochs3": {"epochs": 3},
    },
    "class_ddpm": {
        "default": {},
        "v_zero_snr": {"prediction": "v", "ddpm": {"zero_terminal_snr": True}},
    },
    "class_fm": {
        "default": {},
        "no_decay": {"lr_decay": False},
        "spec_recipe": {"warmup_steps": 0, "t_sampling": "uniform", "ema_decay": 0.0},
    },
    "class_fm_noschedule": {
        "default": {},
        "lr1e-2": {"lr": 1e-2},
        "lr2e-3": {"lr": 2e-3},
    },
}
# Options that are not model params: training seed, the noise schedule, bench-only switches.
RUN_OPTIONS = ("seed", "ddpm", "bf16_embeddings")
# Sampling-only variants scored on the same weights: class models also with CFG inside a noise interval.
INTERVALS = {"+interval": [0.2, 0.8], "+interval0.9": [0.2, 0.9]}


@contextmanager
def bf16_embeddings(enabled: bool):
    """Run the UNet's FC embedding blocks under the surrounding autocast (bf16), as before fp32 embeddings."""
    saved = unet_module.UNet.__dict__["_embed"]  # the staticmethod object itself
    if enabled:
        unet_module.UNet._embed = staticmethod(lambda block, v: block(v))
    try:
        yield
    finally:
        unet_module.UNet._embed = saved


def recipe_params(params: dict, name: str, options: dict) -> dict:
    """params.yaml with the recipe's model options and ddpm overrides applied (validated like a params file)."""
    p = copy.deepcopy(params)
    p["models"][name].update({k: v for k, v in options.items() if k not in RUN_OPTIONS})
    p["ddpm"].update(options.get("ddpm", {}))
    if not p["models"][name].get("lr_decay"):
        p["models"][name].pop("lr_decay_every", None)
    p["models"] = {name: p["models"][name]}  # the other models need not suit the recipe's schedule
    p["sampling"] = {k: v for k, v in p["sampling"].items() if k == name}
    return validate(p)


def score(model_file: Path, kind: str, params: dict, classifier, ref, schedule, n: int, seeds: list[int],
          interval: list[float] | None) -> dict:
    """Mean, spread (max - min over sampling seeds) and the first seed's bootstrap half-width of each metric."""
    model, _ = load_for_inference(model_file, "cpu")
    family = make_family(kind, schedule, prediction=getattr(model, "prediction", "eps"))
    labels = torch.arange(n) % 10 if family.kind.class_conditional else None
    per_seed = []
    for seed in seeds:
        images = generate_in_batches(model, family, n, generator(torch.device("cpu"), seed),
                                     params["sample"]["batch_size"], params["precision"], labels,
                                     gamma=params["gamma"], guidance_interval=interval,
                                     choice=SamplerChoice.from_params(params["sample"]))
        per_seed.append(sample_scores(classifier, images, ref, labels))
    out = {}
    for m in METRICS:
        if m not in per_seed[0]:
            continue
        values = [s[m] for s in per_seed]
        out[m] = statistics.fmean(values)
        out[f"{m}_spread"] = max(values) - min(values)
        out[f"{m}_half"] = (per_seed[0][f"{m}_hi"] - per_seed[0][f"{m}_lo"]) / 2
    out["floor"] = per_seed[0]["fid_baseline"]
    out["legibility_real"] = per_seed[0]["legibility_real"]
    out["sample_seeds"] = len(seeds)
    return out


def run_recipe(name: str, recipe: str, options: dict, params: dict, x, y, classifier, ref, n: int,
               fractions: list[float], emas: list[float], sample_seeds: list[int], work: Path) -> list[dict]:
    """Train one recipe with one training seed, scoring the raw weights, shadow EMAs and sampling variants at the
    given fractions of its steps."""
    p = recipe_params(params, name, options)
    entry = dict(p["models"][name])
    subset = entry.pop("train_subset")
    entry.pop("schedule")
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in entry.items() if k in known}, seed=options.get("seed", p["seed"]),
                      device="cpu", precision=p["precision"])
    if subset == 0 or subset > train_range(VALIDATION, len(x)).start:
        raise SystemExit(f"{name}: trains on validation digits (train_subset {subset}); choices need a model that "
                         "never saw them")
    xs, ys = x[:subset], y[:subset]
    schedule = NoiseSchedule.for_model(p, name)
    steps_per_epoch = -(-len(xs) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    at = sorted({max(1, round(f * total)) for f in fractions})
    seed_everything(cfg.seed)  # the initial weights train() starts from, where its own EMA starts too
    init = build_model(cfg.kind, cfg.hidden, cfg.prediction)
    # the run's own EMA, rebuilt beside it (same start, same updates), is what its snapshots and model would be
    own = EMA(init, cfg.ema_decay, cfg.ema_power) if cfg.ema_decay > 0 else None
    shadows = {decay: EMA(init, decay) for decay in emas}
    conditional = make_family(cfg.kind, schedule, prediction=cfg.prediction).kind.class_conditional
    variants = {"": None, **(INTERVALS if conditional else {})}
    rows, clock = [], {"scoring": 0.0}
    tmp = work / f"{name}-{recipe}-{cfg.seed}"

    def on_step(step: int, model: torch.nn.Module) -> None:
        for ema in [*shadows.values(), *([own] if own else [])]:
            ema.update(model)
        if step not in at:
            return
        began = time.perf_counter()
        minutes = (began - start - clock["scoring"]) / 60
        seeds = sample_seeds if step == at[-1] else sample_seeds[:1]
        weights = {"": own.model if own else model, **{f"+ema{d:g}": e.model for d, e in shadows.items()}}
        for suffix, w in weights.items():
            f = tmp / f"step{step}{suffix}.safetensors"
            save_model(f, w, cfg.kind)
            for variant, interval in variants.items():
                s = score(f, cfg.kind, p, classifier, ref, schedule, n, seeds, interval)
                row = {"model": name, "recipe": recipe + suffix + variant, "options": options, "train_seed": cfg.seed,
                       "steps": step, "epochs": round(step / steps_per_epoch, 3), "minutes": round(minutes, 3), **s}
                rows.append(row)
                print(line(row), flush=True)
        clock["scoring"] += time.perf_counter() - began

    out = Outputs(tmp / "model.safetensors", tmp / "snapshots", tmp / "live", tmp / "ckpt")
    start = time.perf_counter()
    with bf16_embeddings(options.get("bf16_embeddings", False)):
        train(f"{name}:{recipe}", cfg, xs, ys, out, schedule, on_step=on_step)
    return rows


def line(r: dict) -> str:
    acc = f"{r['accuracy']:>6.3f}{r['cas']:>6.3f}" if "accuracy" in r else f"{'':>12}"
    return (f"{r['model']:<20}{r['recipe']:<36}{r['train_seed']:>3}{r['steps']:>6}{r['minutes']:>7.2f}"
            f"{r['fid'] / r['floor']:>7.2f} ±{max(r['fid_spread'] / 2, r['fid_half']) / r['floor']:<5.2f}"
            f"{r['legibility']:>6.3f}{r['precision']:>6.3f}{r['recall']:>6.3f}{acc}")


HEADER = (f"{'model':<20}{'recipe':<36}{'ts':>3}{'steps':>6}{'min':>7}{'FD/floor':>8}{'':>6}{'legib':>6}{'prec':>6}"
          f"{'rec':>6}{'acc':>6}{'cas':>6}")


def summary(results: list[dict]) -> list[dict]:
    """Per model, recipe and step count: the mean over training seeds and the range they span (the last fraction)."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["model"], r["recipe"], r["steps"]), []).append(r)
    out = []
    for (model, recipe, steps), rows in groups.items():
        entry = {"model": model, "recipe": recipe, "steps": steps, "train_seeds": len(rows),
                 "minutes": statistics.fmean(r["minutes"] for r in rows), "floor": rows[0]["floor"]}
        for m in METRICS:
            if m in rows[0]:
                vals = [r[m] for r in rows]
                entry[m] = statistics.fmean(vals)
                entry[f"{m}_range"] = [min(vals), max(vals)]
                entry[f"{m}_within"] = max(max(r[f"{m}_spread"] / 2, r[f"{m}_half"]) for r in rows)
        out.append(entry)
    return out


def plot(results: list[dict], path: Path) -> None:
    """Per model: FD / floor and legibility against training minutes (mean over training seeds, the range as
    error bars), and FD / floor against optimizer steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    rows = summary(results)
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(len(models), 3, figsize=(15, 3.8 * len(models)), squeeze=False)
    for ax_row, name in zip(axes, models):
        mine = [r for r in rows if r["model"] == name]
        recipes = list(dict.fromkeys(r["recipe"] for r in mine))
        bases = list(dict.fromkeys(r.split("+ema")[0].split("+interval")[0] for r in recipes))
        for recipe in recipes:
            pts = sorted((r for r in mine if r["recipe"] == recipe), key=lambda r: r["steps"])
            base = recipe.split("+ema")[0].split("+interval")[0]
            style = dict(ls="--" if "+ema" in recipe else (":" if "+interval" in recipe else "-"),
                         color=f"C{bases.index(base) % 10}", marker="o", ms=3, capsize=2, label=recipe)
            for ax, xkey, ykey in ((ax_row[0], "minutes", "fid"), (ax_row[1], "minutes", "legibility"),
                                   (ax_row[2], "steps", "fid")):
                scale = [r["floor"] if ykey == "fid" else 1.0 for r in pts]
                ys = [r[ykey] / s for r, s in zip(pts, scale)]
                err = [[(r[ykey] - r[f"{ykey}_range"][0]) / s for r, s in zip(pts, scale)],
                       [(r[f"{ykey}_range"][1] - r[ykey]) / s for r, s in zip(pts, scale)]]
                ax.errorbar([r[xkey] for r in pts], ys, yerr=err, **style)
        real = results[[r["model"] for r in results].index(name)]["legibility_real"]
        ax_row[0].set(title=f"{name}: FD / real-vs-real floor (validation)", xlabel="training minutes (shared CPU)")
        ax_row[1].set(title=f"{name}: legibility (held-out real digits {real:.2f})", xlabel="training minutes",
                      ylim=(0, 1))
        ax_row[2].set(title=f"{name}: FD / floor against optimizer steps", xlabel="optimizer steps")
        target = 3.0 if name.startswith("class_") else None
        for ax in (ax_row[0], ax_row[2]):
            if target:
                ax.axhline(target, color="k", lw=0.8, ls=":")
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        if not name.startswith("class_"):
            ax_row[1].axhline(0.75, color="k", lw=0.8, ls=":")
        ax_row[2].legend(fontsize=6, title="error bars: range over training seeds; dashed: EMA; dotted: CFG interval",
                         title_fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="time_fm default only, 2,000 digits, n = 100 (~1 minute)")
    ap.add_argument("--runs", nargs="*", default=None,
                    help="model:recipe pairs to train (default: every recipe of time_ddpm and time_fm)")
    ap.add_argument("--mnist", default="data/mnist", help="MNIST root (torchvision layout), as fetch_data writes")
    ap.add_argument("--classifier", default="models/classifier.safetensors")
    ap.add_argument("--results", default="bench/frontier.json", help="accumulated results (JSON)")
    ap.add_argument("--plot", default="bench/frontier.png")
    ap.add_argument("--ema", nargs="*", type=float, default=[], help="shadow EMA decays scored in every run")
    ap.add_argument("--fractions", nargs="*", type=float, default=[0.5, 1.0])
    ap.add_argument("--train-seeds", nargs="*", type=int, default=[0, 1])
    ap.add_argument("--sample-seeds", type=int, default=3, help="sampling seeds at the last fraction")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = load()
    results_path = Path(args.results)
    results = json.loads(results_path.read_text()) if results_path.is_file() else []
    if not args.plot_only:
        runs = args.runs or [f"{m}:{r}" for m in ("time_ddpm", "time_fm") for r in RECIPES[m]]
        n, train_seeds = params["sample"]["n_fid"], args.train_seeds
        if args.quick:
            runs, n, train_seeds = ["time_fm:default"], 100, [0]
            for m in params["models"].values():
                m["train_subset"] = 2000
        x, y = load_mnist(args.mnist, train=True)
        classifier = load_classifier(args.classifier, "cpu")
        ref = reference(classifier, args.mnist, n, split="validation", precision=params["precision"])
        sample_seeds = [VALIDATION_SEED + k for k in range(args.sample_seeds)]
        print(f"threads {torch.get_num_threads()}, n = {n}, validation reference, floor "
              f"{ref.ceilings['fid'].value:.2f}, held-out legibility {ref.ceilings['legibility'].value:.3f}; "
              f"sampler {SamplerChoice.from_params(params['sample'])}, sampling seeds {sample_seeds}")
        print(HEADER)
        with tempfile.TemporaryDirectory() as work:
            for run in runs:
                name, recipe = run.split(":")
                for seed in train_seeds:
                    options = {**RECIPES[name][recipe], "seed": seed}
                    rows = run_recipe(name, recipe, options, params, x, y, classifier, ref, n, args.fractions,
                                      args.ema, sample_seeds, Path(work))
                    if args.quick:
                        results = rows
                        continue
                    results = [r for r in results if not (r["model"] == name and r["train_seed"] == seed and
                                                          r["recipe"].split("+")[0] == recipe)] + rows
                    results_path.write_text(json.dumps(results, indent=1) + "\n")
    if not args.quick:
        plot(results, Path(args.plot))
        print(f"plot: {args.plot}")
    last = {}
    for r in summary(results):  # the last fraction of each recipe
        key = (r["model"], r["recipe"])
        if key not in last or r["steps"] > last[key]["steps"]:
            last[key] = r
    print(f"\n{'model':<20}{'recipe':<36}{'seeds':>6}{'steps':>6}{'min':>6}  FD/floor [range] ±within   legibility "
          "[range]   precision recall accuracy cas")
    for r in last.values():
        f = r["floor"]
        acc = f"{r['accuracy']:.3f} {r['cas']:.3f}" if "accuracy" in r else ""
        print(f"{r['model']:<20}{r['recipe']:<36}{r['train_seeds']:>6}{r['steps']:>6}{r['minutes']:>6.1f}  "
              f"{r['fid'] / f:5.2f} [{r['fid_range'][0] / f:.2f}, {r['fid_range'][1] / f:.2f}] ±{r['fid_within'] / f:.2f}"
              f"   {r['legibility']:.3f} [{r['legibility_range'][0]:.3f}, {r['legibility_range'][1]:.3f}]   "
              f"{r['precision']:.3f} {r['recall']:.3f} {acc}")
    best = {}
    for r in last.values():
        ratio = r["fid"] / r["floor"]
        if r["model"] not in best or ratio < best[r["model"]][0]:
            best[r["model"]] = (ratio, r)
    print("frontier: " + "; ".join(f"{m} {ratio:.2f}x floor, legibility {r['legibility']:.2f} at {r['minutes']:.1f} "
                                   f"min ({r['recipe']}, {r['steps']} steps)" for m, (ratio, r) in best.items()))


if __name__ == "__main__":
    main()
