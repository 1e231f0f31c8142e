"""sample@<name>: a generative model's sample grid at every training snapshot (the epochs and a few steps of the first
epoch), logged with DVCLive as images by step for a slider, a GIF of the sampling process, its loss curve, and the
samples the evaluation scores against the test digits (Fréchet distance, precision, recall, legibility; class models
also accuracy and the classification accuracy score), with their captions."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save

from difflab.core.families import Family
from difflab.core.inference import load_for_inference
from difflab.core.weights import Snapshot, list_snapshots
from difflab.evaluation.classifier import load_classifier
from difflab.evaluation.metrics import reference, sample_scores
from difflab.figures import manifest, plots
from difflab.figures.training_log import read_curve
from difflab.pipeline import paths
from difflab.pipeline.errors import MissingFileError, write_atomically
from difflab.pipeline.runtime import autocast, generator, resolve_device, seed_everything, write_metrics
from difflab.sampling.choice import SamplerChoice
from difflab.sampling.samplers import digit_labels, generate, generate_in_batches, sampling_family

if TYPE_CHECKING:
    from dvclive import Live

# Samples per digit in the per-snapshot grids (class models; unconditional grids show PER_CLASS x 10). Two, not the
# four of before the slider: every model now draws 3 more grids, and at four those cost 3.2-3.9 % of the training time
# of time_ddpm, class_fm and class_fm_noschedule in an earlier run of bench/slider.py; at two, 1.1 % in all and at
# most 2.3 % for one model (bench/README.md, 2026-12-05).
PER_CLASS = 2
LIVE = "live"  # sample@'s DVCLive directory inside its out: the grids are live/plots/images/samples/<step>.png


class SampleRun:
    """What one sample@<name> run shows, and how it words it in captions."""

    def __init__(self, name: str, params: dict):
        self.name, self.params = name, params
        self.model = params["models"][name]
        self.family: Family = sampling_family(params, name)
        self.conditional = self.family.kind.class_conditional
        self.choice = SamplerChoice.from_params(params["sample"])
        num_ts = self.family.schedule.num_ts if self.family.kind.family == "ddpm" else 0
        self.sampler = self.choice.describe(self.family.kind.family, num_ts)
        self.every = self.choice.frame_every(self.family.kind.family, num_ts)
        self.gamma = params["gamma"] if self.conditional else 0.0
        self.interval = params["sample"].get("guidance_interval") if self.conditional else None
        self.guidance = "unconditional"
        if self.conditional:
            self.guidance = f"CFG gamma={params['gamma']}" + (
                f" at noise levels {self.interval[0]:g}-{self.interval[1]:g}" if self.interval else "")
        self.what = (f"{PER_CLASS} samples per digit (columns 0-9), {self.guidance}" if self.conditional
                     else f"{PER_CLASS * 10} unconditional samples")
        self.how = self.sampler + (f", {self.guidance}" if self.conditional else "")
        self.opts = dict(gamma=self.gamma, guidance_interval=self.interval, choice=self.choice)  # generate()'s

    def title(self, snap: Snapshot) -> str:
        """The slider image's title: model, step and epoch."""
        epoch = f"after epoch {snap.whole_epoch}" if snap.whole_epoch is not None else f"epoch {snap.epoch:.2f}"
        return f"{self.name}: samples at step {snap.step} ({epoch}, {self.guidance})"

    def log_grid(self, live: Live, snap: Snapshot, device: torch.device, frame_every: int = 0) -> list[torch.Tensor]:
        """Sample the grid from snapshot `snap` with the same seed, so the same noise and digits, at every snapshot,
        and log it with DVCLive (`live`) at the snapshot's step; returns the sampling frames (frame_every > 0)."""
        model, _ = load_for_inference(snap.path, device)
        labels = digit_labels(PER_CLASS) if self.conditional else None
        with autocast(device, self.params["precision"]):
            images, frames = generate(model, self.family, PER_CLASS * 10, generator(device, self.params["seed"]),
                                      labels=labels, frame_every=frame_every, **self.opts)
        cols = [str(d) for d in range(10)] if self.conditional else []
        live.step = snap.step
        live.log_image(image_name(snap.step), plots.pixels(plots.grid_figure(self.grid_order(images), col_labels=cols,
                                                                              title=self.title(snap))))
        return frames

    def grid_order(self, images: torch.Tensor) -> torch.Tensor:
        """Class samples come digit by digit; the grid shows digits as columns, PER_CLASS rows."""
        if self.conditional:
            return images.view(10, PER_CLASS, 1, 28, 28).transpose(0, 1)
        return images.view(PER_CLASS, 10, 1, 28, 28)

    def figures(self, snapshots: list[Snapshot]) -> list[manifest.Figure]:
        """The manifest entries, in the course's order; the per-epoch figures are the slider's images at the epoch
        snapshots' steps."""
        train_sec, sample_sec = ("B.2.5", "B.2.6") if self.conditional else ("B.2.2", "B.2.3")
        family = "flow-matching" if self.family.kind.family == "flow" else "DDPM"
        made = f"{self.model['kind']} UNet ({manifest.describe_training(self.model)}), seed {self.params['seed']}"
        figs = [manifest.Figure("loss.png", f"{self.name}: training loss",
                                f"Per-step training loss (log scale, moving average in bold) of the {made}.",
                                train_sec)]
        for snap in snapshots:
            if (epoch := snap.whole_epoch) is not None:
                figs.append(manifest.Figure(slider_image(snap.step), f"{self.name}: samples after epoch {epoch}",
                                            f"{self.what} from the {family} model after epoch {epoch} of "
                                            f"{self.model['epochs']} (step {snap.step}); {self.sampler}; {made}.",
                                            sample_sec))
        steps = "every step" if self.every == 1 else f"every {self.every} steps"
        figs.append(manifest.Figure("process.gif", f"{self.name}: the sampling process",
                                    f"The same {self.what} as they emerge from pure noise, {steps} of "
                                    f"{self.sampler}; final model, {made}.", sample_sec))
        figs.append(manifest.Figure("fid_samples.png", f"{self.name}: samples the metrics score",
                                    f"Samples from the final model that the Fréchet distance and intended-class "
                                    f"accuracy score ({self.params['sample']['n_fid']} in all; {self.how}); {made}.",
                                    "B.eval"))
        return figs


def write_samples(name: str, params: dict) -> dict:
    """Every output of sample@<name> into reports/samples/<name>; returns the scores written to its metrics."""
    from dvclive import Live

    run = SampleRun(name, params)
    out = paths.REPORTS / "samples" / name
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(params["device"])
    seed_everything(params["seed"])
    snapshots = training_snapshots(name, run.model)
    live = Live(str(out / LIVE), dvcyaml=False, save_dvc_exp=False)
    for snap in snapshots:  # the final snapshot is the final model: its run also records the GIF
        frames = run.log_grid(live, snap, device, frame_every=run.every if snap is snapshots[-1] else 0)
    plots.save_gif(out / "process.gif", [run.grid_order(f).reshape(-1, 1, 28, 28) for f in frames], nrow=10)
    steps, losses = read_curve(paths.train_outputs(name).live)
    plots.loss_curve(out / "loss.png", {name: (steps, losses)}, title=f"{name}: training loss", smooth=25)

    model, _ = load_for_inference(paths.model_file(name), device)
    n = params["sample"]["n_fid"]
    fid_labels = torch.arange(n) % 10 if run.conditional else None
    images = generate_in_batches(model, run.family, n, generator(device, params["seed"] + 1),
                                 params["sample"]["batch_size"], params["precision"], fid_labels,
                                 **run.opts).mul(255).round().to(torch.uint8)
    tensors = {"images": images.contiguous()}
    if run.conditional:
        tensors["labels"] = fid_labels.contiguous()
    write_atomically(out / "samples.safetensors", save(tensors))
    scored_grid(out / "fid_samples.png", images, fid_labels, title=f"{name}: samples scored ({run.how})")

    classifier = load_classifier(paths.CLASSIFIER, device)
    ref = reference(classifier, paths.MNIST, n, precision=params["precision"])
    scores = sample_scores(classifier, images.float() / 255, ref, fid_labels)
    write_metrics(paths.REPORTS / "metrics" / f"sample_{name}.json", scores, device, params["precision"])
    manifest.write(out, run.figures(snapshots))
    return scores


def image_name(step: int) -> str:
    """The DVCLive image name of the grid at `step`: a folder of images named by step, the "image by step" layout
    that `dvc plots` lists and the VS Code extension shows on a slider."""
    return f"samples/{step}.png"


def slider_image(step: int) -> str:
    """That grid's file relative to sample@'s out (DVCLive writes images to <dir>/plots/images/<name>)."""
    return f"{LIVE}/plots/images/{image_name(step)}"


def training_snapshots(name: str, model: dict) -> list[Snapshot]:
    """Every snapshot train@<name> kept, in training order; the epochs its params promise must be among them."""
    directory = paths.snapshot_dir(name)
    snapshots = list_snapshots(directory) if directory.is_dir() else []
    promised = {e for e in model["snapshots"] if e <= model["epochs"]} | {model["epochs"]}
    missing = sorted(promised - {s.whole_epoch for s in snapshots})
    if missing:
        raise MissingFileError(f"no snapshots in {directory} of epoch {', '.join(map(str, missing))}; restore them "
                               f"with `dvc checkout {directory}` or retrain with `dvc repro train@{name}`")
    return snapshots


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


