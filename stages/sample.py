"""DVC stage sample@<name>: sample grids at each snapshot epoch, a GIF of the sampling process, the loss curve,
and the samples that the evaluation scores."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from difflab import paths, plots  # noqa: E402
from difflab.objectives import is_class_conditional  # noqa: E402
from difflab.params import load  # noqa: E402
from difflab.runtime import autocast, generator, resolve_device, seed_everything  # noqa: E402
from difflab.samplers import digit_labels, generate  # noqa: E402
from difflab.schedule import DDPMSchedule  # noqa: E402
from difflab.training_log import read_curve  # noqa: E402
from difflab.weights import load_model  # noqa: E402

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
    opts = dict(schedule=schedule, gamma=params["gamma"], flow_steps=s["flow_steps"])

    def draw(model, n, gen, labels, **kw):
        with autocast(device, params["precision"]):
            return generate(model, kind, n, gen, labels=labels, **opts, **kw)

    cols = [str(d) for d in range(10)] if conditional else []
    what = f"CFG gamma={params['gamma']}" if conditional else "unconditional"
    for epoch, file in paths.snapshots(name).items():
        model, _ = load_model(file, device)
        images, _ = draw(model, len(digit_labels(PER_CLASS)), generator(device, params["seed"]), labels)
        grid = images.view(10, PER_CLASS, 1, 28, 28).transpose(0, 1) if conditional else images.view(4, 10, 1, 28, 28)
        plots.image_grid(out / f"epoch_{epoch:02d}.png", grid, col_labels=cols,
                         title=f"{name}: samples after epoch {epoch} ({what})")
    model, _ = load_model(paths.model_file(name), device)
    _, frames = draw(model, len(digit_labels(PER_CLASS)), generator(device, params["seed"]), labels, frame_every=10)
    order = [f.view(10, PER_CLASS, 1, 28, 28).transpose(0, 1).reshape(-1, 1, 28, 28) if conditional else f
             for f in frames]
    plots.save_gif(out / "process.gif", order, nrow=10)
    steps, losses = read_curve(paths.train_outputs(name).live)
    plots.loss_curve(out / "loss.png", {name: (steps, losses)}, title=f"{name}: training loss", smooth=25)

    gen = generator(device, params["seed"] + 1)
    batches, fid_labels = [], digit_labels(s["n_fid"] // 10 + 1)[: s["n_fid"]] if conditional else None
    for i in range(0, s["n_fid"], s["batch_size"]):
        n = min(s["batch_size"], s["n_fid"] - i)
        lab = fid_labels[i:i + n] if conditional else None
        batches.append(draw(model, n, gen, lab, sampler=s["sampler"], steps=s["steps"])[0])
    images = torch.cat(batches).mul(255).round().to(torch.uint8)
    tensors = {"images": images.contiguous()}
    if conditional:
        tensors["labels"] = fid_labels.contiguous()
    save_file(tensors, str(out / "samples.safetensors"))
    print(f"[{name}] wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1])
