"""DVC stage guidance_sweep: intended-class accuracy and Fréchet distance of class-conditioned models across the
CFG scales in `guidance_sweep.gammas` (a figure, one TSV per model for `dvc plots`, and metrics)."""
import csv
import sys

from difflab.core.schedule import DDPMSchedule
from difflab.core.weights import load_model
from difflab.evaluation.classifier import load_classifier
from difflab.evaluation.metrics import reference, significant
from difflab.figures import manifest, plots
from difflab.part_b.guidance import sweep
from difflab.pipeline import paths
from difflab.pipeline.errors import run_stage
from difflab.pipeline.params import load
from difflab.pipeline.runtime import resolve_device, seed_everything, write_metrics
from difflab.sampling.samplers import SamplerChoice

OUT = paths.REPORTS / "guidance"
METRICS = paths.REPORTS / "metrics" / "guidance.json"


def main(names: list[str]) -> None:
    params = load()
    g, s = params["guidance_sweep"], params["sample"]
    device = resolve_device(params["device"])
    seed_everything(params["seed"])
    classifier = load_classifier(paths.CLASSIFIER, device)
    ref = reference(classifier, paths.MNIST, g["n"])
    OUT.mkdir(parents=True, exist_ok=True)
    results, metrics = {}, {"fid_baseline": significant(ref.baseline), "n": g["n"]}
    choice = SamplerChoice.from_params(s)
    for name in names:
        kind = params["models"][name]["kind"]
        model, _ = load_model(paths.model_file(name), device)
        schedule = DDPMSchedule.linear(**params["ddpm"]) if kind.endswith("_ddpm") else None
        rows = sweep(model, kind, g["gammas"], g["n"], params["seed"] + 2, classifier, ref, s["batch_size"],
                     params["precision"], schedule=schedule, choice=choice)
        with open(OUT / f"{name}.tsv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["gamma", "accuracy", "fid"], delimiter="\t", lineterminator="\n")
            writer.writeheader(), writer.writerows(rows)
        results[name] = tuple(zip(*((r["gamma"], r["accuracy"], r["fid"]) for r in rows)))
        metrics[name] = {f"gamma_{r['gamma']:g}": {"accuracy": r["accuracy"], "fid": r["fid"]} for r in rows}
        print(f"[guidance_sweep] {name}: {rows}")
    how = "; ".join(choice.describe(params["models"][n]["kind"], params["ddpm"]["num_ts"]) + f" for {n}" for n in names)
    plots.guidance_sweep(OUT / "sweep.png", results, ref.baseline,
                         title=f"CFG sweep: {g['n']} samples per model and γ ({how})")
    manifest.write(OUT, [manifest.Figure(
        "sweep.png", "Classifier-free guidance sweep",
        f"Intended-class accuracy (left) and Fréchet distance to the test set (right) of {', '.join(names)} at "
        f"CFG scales γ = {', '.join(f'{x:g}' for x in g['gammas'])}; {g['n']} samples per point from the same noise "
        f"({how}, seed {params['seed']}). The dashed line is {g['n']} real training digits against the test set.",
        "B.eval")])
    write_metrics(METRICS, metrics, device, params["precision"])


if __name__ == "__main__":
    run_stage("guidance_sweep", main, sys.argv[1:])
