"""guidance_sweep: sample class-conditioned models at several CFG scales from the same noise, and score each scale
(intended-class accuracy, Fréchet distance, precision, recall, legibility, classification accuracy score, each with
its interval) against the test digits; with `guidance_sweep.interval`, every scale twice: CFG at every step and CFG
only at the noise levels in the interval (Kynkäänniemi et al. 2024). A figure, one TSV per model for `dvc plots`,
and metrics."""
from __future__ import annotations

import csv
import io

import torch
from torch import nn

from difflab.core.families import Family
from difflab.core.inference import load_for_inference
from difflab.core.unet import UNet
from difflab.evaluation.classifier import load_classifier
from difflab.evaluation.metrics import CEILING_NAMES, Reference, reference, sample_scores
from difflab.figures import manifest, plots
from difflab.pipeline import paths
from difflab.pipeline.errors import write_atomically
from difflab.pipeline.runtime import generator, resolve_device, seed_everything, write_metrics
from difflab.sampling.choice import SamplerChoice
from difflab.sampling.samplers import generate_in_batches, sampling_family

OUT = paths.REPORTS / "guidance"
METRICS = paths.REPORTS / "metrics" / "guidance.json"


CEILINGS = {f"{name}{end}" for name in CEILING_NAMES.values() for end in ("", "_lo", "_hi")}
TSV = ["gamma", "accuracy", "accuracy_lo", "accuracy_hi", "fid", "fid_lo", "fid_hi"]
INTERVAL = "interval"  # a row's scores with CFG only inside guidance_sweep.interval, and their TSV's suffix


def sweep(model: UNet, family: Family, gammas: list[float], n: int, seed: int, classifier: nn.Module, ref: Reference,
          batch_size: int, precision: str = "auto", interval: list[float] | None = None, **opts) -> list[dict]:
    """One row per scale: gamma and the scores of the n samples (digits cycling 0-9) that depend on them, without
    the real-vs-real values of the reference; with an interval, under "interval" the same scores with CFG only at the
    noise levels in it. Every sampling starts from the same noise (generator seeded with `seed`), so rows differ
    only by gamma and by where CFG applies."""
    labels = torch.arange(n) % 10
    device = next(model.parameters()).device

    def scores(gamma: float, guidance_interval: list[float] | None) -> dict:
        images = generate_in_batches(model, family, n, generator(device, seed), batch_size, precision, labels,
                                     gamma=gamma, guidance_interval=guidance_interval, **opts)
        return {k: v for k, v in sample_scores(classifier, images, ref, labels).items()
                if k not in CEILINGS | {"n", "reference", "per_class"}}

    rows = []
    for gamma in gammas:
        every_step = scores(gamma, None)
        rows.append({"gamma": gamma, **every_step})
        if interval is not None:  # at gamma = 1 no step is guided either way: the same samples
            rows[-1][INTERVAL] = every_step if gamma == 1 else scores(gamma, interval)
    return rows


def tsv(rows: list[dict]) -> str:
    """The scores `dvc plots` draws, one line per scale."""
    table = io.StringIO()
    writer = csv.DictWriter(table, TSV, delimiter="\t", lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return table.getvalue()


def write_sweeps(names: list[str], params: dict) -> dict:
    """Sweep each model in `names`; write reports/guidance (figure, TSVs, manifest) and the metrics it returns: the
    real-vs-real values once, then per model and scale every score."""
    g, s = params["guidance_sweep"], params["sample"]
    device = resolve_device(params["device"])
    seed_everything(params["seed"])
    classifier = load_classifier(paths.CLASSIFIER, device)
    ref = reference(classifier, paths.MNIST, g["n"], precision=params["precision"])
    OUT.mkdir(parents=True, exist_ok=True)
    ceilings = {**ref.ceilings, "cas": ref.cas_real}
    metrics = {"n": g["n"], "reference": ref.split,
               **{k: v for name, est in ceilings.items() for k, v in est.named(CEILING_NAMES[name]).items()}}
    results = {}
    if interval := g.get("interval"):
        metrics["interval"] = interval
    choice = SamplerChoice.from_params(s)
    how = []
    for name in names:
        family = sampling_family(params, name)
        model, _ = load_for_inference(paths.model_file(name), device)
        rows = sweep(model, family, g["gammas"], g["n"], params["seed"] + 2, classifier, ref, s["batch_size"],
                     params["precision"], interval, choice=choice)
        write_atomically(OUT / f"{name}.tsv", tsv(rows))
        if interval:  # a file of its own: `dvc plots` draws every file it finds, and skips only a missing one
            write_atomically(OUT / f"{name}_{INTERVAL}.tsv", tsv([{"gamma": r["gamma"], **r[INTERVAL]} for r in rows]))
        results[name] = rows
        metrics[name] = {f"gamma_{r['gamma']:g}": {k: v for k, v in r.items() if k != "gamma"} for r in rows}
        how.append(choice.describe(family.kind.family, params["ddpm"]["num_ts"]) + f" for {name}")
        print(f"[guidance_sweep] {name}: " + "; ".join(
            f"γ={r['gamma']:g} accuracy {r['accuracy']} fid {r['fid']} cas {r['cas']}" + (
                f" (in the interval: accuracy {r[INTERVAL]['accuracy']} fid {r[INTERVAL]['fid']})"
                if INTERVAL in r else "") for r in rows))
    how = "; ".join(how)
    floor = ceilings["fid"]
    plots.guidance_sweep(OUT / "sweep.png", results, floor, interval=interval,
                         title=f"CFG sweep: {g['n']} samples per model and γ ({how})")
    where = (f" Solid lines guide every step, dashed ones only the steps at noise levels {interval[0]:g}-"
             f"{interval[1]:g} (1 = pure noise, 0 = clean; Kynkäänniemi et al. 2024), from the same noise."
             if interval else "")
    manifest.write(OUT, [manifest.Figure(
        "sweep.png", "Classifier-free guidance sweep",
        f"Intended-class accuracy (left) and Fréchet distance to the test digits (right) of {', '.join(names)} at "
        f"CFG scales γ = {', '.join(f'{x:g}' for x in g['gammas'])}; {g['n']} samples per point from the same noise "
        f"({how}, seed {params['seed']}), bars their 95% bootstrap intervals.{where} The dotted line and grey band "
        f"are {g['n']} held-out real digits against the test digits (the floor, {floor.value:.3g} "
        f"[{floor.lo:.3g}, {floor.hi:.3g}]).",
        "B.eval")])
    write_metrics(METRICS, metrics, device, params["precision"])
    return metrics
