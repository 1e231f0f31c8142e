"""DVC stage sample@<name>: sample grids at each snapshot epoch, a GIF of the sampling process, the loss curve,
and the samples that the evaluation scores."""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from difflab.core.families import is_class_conditional
from difflab.core.schedule import DDPMSchedule
from difflab.core.weights import load_model
from difflab.evaluation.classifier import load_classifier
from difflab.evaluation.metrics import reference, sample_scores
from difflab.figures import manifest, plots
from difflab.figures.training_log import read_curve
from difflab.pipeline import paths
from difflab.pipeline.errors import MissingFileError, run_stage
from difflab.pipeline.params import load
from difflab.pipeline.runtime import (
    autocast,
    generator,
    resolve_device,
    seed_everything,
    write_metrics,
)
from difflab.sampling.samplers import (
    SamplerChoice,
    digit_labels,
    generate,
    generate_in_batches,
)

PER_CLASS = 4


def main(name: str) -> None:
    params = load()
    kind = params["models"][name]["kind"]
    out = paths.REPORTS / "samples" / name
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(params["device"])
    seed_everything(params["seed"])
    schedule = DDPMSchedule.linear(**params["ddpm"]) if kind.endswith("_ddpm") else None
    conditional = is_class_conditional(kind)
    labels = digit_labels(PER_CLASS) if conditional else None
    s = params["sample"]
    choice = SamplerChoice.from_params(s)
    opts = dict(schedule=schedule, gamma=params["gamma"] if conditional else 0.0, choice=choice)

    def in_grid_order(images: torch.Tensor) -> torch.Tensor:
        """Class samples come digit by digit; the grid shows digits as columns, PER_CLASS rows."""
        return images.view(10, PER_CLASS, 1, 28, 28).transpose(0, 1) if conditional else images.view(4, 10, 1, 28, 28)

    cols = [str(d) for d in range(10)] if conditional else []
    what = f"CFG gamma={params['gamma']}" if conditional else "unconditional"
    num_ts = schedule.num_ts if schedule is not None else 0  # flow models read no `ddpm` params
    every = choice.frame_every(kind, num_ts)
    snapshots = paths.snapshots(name)
    if not snapshots:
        raise MissingFileError(f"no snapshots in {paths.snapshot_dir(name)}; restore them with "
                               f"`dvc checkout {paths.snapshot_dir(name)}` or retrain with `dvc repro train@{name}`")
    for epoch, file in snapshots.items():
        model, _ = load_model(file, device)
        final = epoch == max(snapshots)  # the final snapshot is the final model: its run also records the GIF
        with autocast(device, params["precision"]):
            images, frames = generate(model, kind, len(digit_labels(PER_CLASS)), generator(device, params["seed"]),
                                      labels=labels, frame_every=every if final else 0, **opts)
        plots.image_grid(out / f"epoch_{epoch:02d}.png", in_grid_order(images), col_labels=cols,
                         title=f"{name}: samples after epoch {epoch} ({what})")
    plots.save_gif(out / "process.gif", [in_grid_order(f).reshape(-1, 1, 28, 28) for f in frames], nrow=10)
    steps, losses = read_curve(paths.train_outputs(name).live)
    plots.loss_curve(out / "loss.png", {name: (steps, losses)}, title=f"{name}: training loss", smooth=25)

    model, _ = load_model(paths.model_file(name), device)
    fid_labels = torch.arange(s["n_fid"]) % 10 if conditional else None
    images = generate_in_batches(model, kind, s["n_fid"], generator(device, params["seed"] + 1), s["batch_size"],
                                 params["precision"], fid_labels, **opts).mul(255).round().to(torch.uint8)
    tensors = {"images": images.contiguous()}
    if conditional:
        tensors["labels"] = fid_labels.contiguous()
    save_file(tensors, str(out / "samples.safetensors"))
    how = choice.describe(kind, num_ts) + (f", {what}" if conditional else "")
    scored_grid(out / "fid_samples.png", images, fid_labels, title=f"{name}: samples scored ({how})")

    classifier = load_classifier(paths.CLASSIFIER, device)
    ref = reference(classifier, paths.MNIST, s["n_fid"])
    scores = sample_scores(classifier, images.float() / 255, ref, fid_labels)
    write_metrics(paths.REPORTS / "metrics" / f"sample_{name}.json", scores, device, params["precision"])
    manifest.write(out, figures(name, params, how))
    print(f"[{name}] wrote {out}: fid {scores['fid']} (real-vs-real {scores['fid_baseline']})"
          + (f", intended-class accuracy {scores['accuracy']}" if conditional else ""))


def scored_grid(path: Path, images: torch.Tensor, labels: torch.Tensor | None, title: str) -> None:
    """Up to 10 scored samples per digit (columns 0-9), or the first 40 unconditional ones."""
    x = images.float() / 255
    if labels is None:
        rows = [list(x[i:i + 10]) for i in range(0, min(40, len(x)), 10)]
        plots.image_grid(path, rows, title=title)
        return
    per_digit = [x[labels == d] for d in range(10)]
    rows = [[p[r] for p in per_digit] for r in range(min(10, *(len(p) for p in per_digit)))]
    plots.image_grid(path, rows, col_labels=[str(d) for d in range(10)], title=title)


def figures(name: str, params: dict, how: str) -> list[manifest.Figure]:
    """The manifest entries of sample@<name>, in the course's order."""
    m = params["models"][name]
    conditional = is_class_conditional(m["kind"])
    train_sec, sample_sec = ("B.2.5", "B.2.6") if conditional else ("B.2.2", "B.2.3")
    family = "flow-matching" if m["kind"].endswith("_fm") else "DDPM"
    what = (f"{PER_CLASS} samples per digit (columns 0-9), CFG gamma={params['gamma']}" if conditional
            else f"{PER_CLASS * 10} unconditional samples")
    choice = SamplerChoice.from_params(params["sample"])
    num_ts = params["ddpm"]["num_ts"] if m["kind"].endswith("_ddpm") else 0
    sampler = choice.describe(m["kind"], num_ts)
    every = choice.frame_every(m["kind"], num_ts)
    made = f"{m['kind']} UNet ({manifest.describe_training(m)}), seed {params['seed']}"
    figs = [manifest.Figure("loss.png", f"{name}: training loss",
                            f"Per-step training loss (log scale, moving average in bold) of the {made}.", train_sec)]
    for epoch in paths.snapshots(name):
        figs.append(manifest.Figure(f"epoch_{epoch:02d}.png", f"{name}: samples after epoch {epoch}",
                                    f"{what} from the {family} model after epoch {epoch} of {m['epochs']}; "
                                    f"{sampler}; {made}.", sample_sec))
    figs.append(manifest.Figure("process.gif", f"{name}: the sampling process",
                                f"The same {what} as they emerge from pure noise, "
                                f"{'every step' if every == 1 else f'every {every} steps'} of {sampler}; "
                                f"final model, {made}.", sample_sec))
    figs.append(manifest.Figure("fid_samples.png", f"{name}: samples the metrics score",
                                f"Samples from the final model that the Fréchet distance and intended-class accuracy "
                                f"score ({params['sample']['n_fid']} in all; {how}); {made}.", "B.eval"))
    return figs


if __name__ == "__main__":
    run_stage(f"sample@{sys.argv[1]}", main, sys.argv[1])
