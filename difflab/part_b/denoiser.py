"""evaluate_denoiser: the single-step denoiser's figures (noising, results per epoch, out-of-distribution sigmas,
pure-noise outputs beside the mean training image), loss curves, and test MSE / PSNR per sigma."""
from __future__ import annotations

import torch

from difflab.core.inference import load_for_inference
from difflab.data.mnist import load_mnist
from difflab.evaluation.metrics import mse, psnr
from difflab.figures import manifest, plots
from difflab.figures.training_log import read_curve
from difflab.pipeline import paths
from difflab.pipeline.runtime import autocast, generator, resolve_device, seed_everything, write_metrics

OUT = paths.REPORTS / "denoiser"
METRICS = paths.REPORTS / "metrics" / "denoiser.json"
SHOW = 5  # test digits shown in figures
BATCH = 250  # test digits per forward: small batches run fastest on CPU


@torch.inference_mode()
def write_denoiser_report(params: dict) -> dict:
    """Every output of evaluate_denoiser into reports/denoiser, and its metrics; returns the per-sigma metrics."""
    device = resolve_device(params["device"])
    seed_everything(params["seed"])
    sigmas = params["denoiser_eval"]["sigmas"]
    train_sigma = params["models"]["denoiser"].get("sigma", 0.5)
    x_test, _ = load_mnist(paths.MNIST, train=False)
    scored = x_test[:params["denoiser_eval"]["n_test"] or len(x_test)]
    x_train, _ = load_mnist(paths.MNIST, train=True)
    x = x_test[:SHOW].to(device)
    gen = generator(device, params["seed"])
    eps = torch.randn(x.shape, generator=gen, device=device)
    OUT.mkdir(parents=True, exist_ok=True)

    plots.image_grid(OUT / "noising.png", [[x[i] + s * eps[i] for s in sigmas] for i in range(SHOW)],
                     col_labels=[f"σ={s}" for s in sigmas], title="Noising process z = x + σε")
    z = x + train_sigma * eps
    for epoch, file in paths.snapshots("denoiser").items():
        model, _ = load_for_inference(file, device)
        rows = [list(x), list(z), list(model(z))]
        plots.image_grid(OUT / f"results_epoch_{epoch:02d}.png", rows,
                         row_labels=["clean", f"noisy σ={train_sigma}", "denoised"],
                         title=f"Denoiser on test digits after epoch {epoch}")
    model, _ = load_for_inference(paths.model_file("denoiser"), device)
    noisy = [x[0] + s * eps[0] for s in sigmas]
    plots.image_grid(OUT / "ood.png", [noisy, list(model(torch.stack(noisy)))], row_labels=["noisy", "denoised"],
                     col_labels=[f"σ={s}" for s in sigmas],
                     title=f"Out-of-distribution σ (trained at σ={train_sigma})")

    _pure_noise_figures(x_train.mean(0), device, params["seed"])
    for name in ("denoiser", "pure_noise"):
        steps, losses = read_curve(paths.train_outputs(name).live)
        plots.loss_curve(OUT / f"loss_{name}.png", {name: (steps, losses)}, title=f"{name}: training loss",
                         smooth=25)
    metrics = {f"sigma_{s}": _test_scores(model, scored, s, gen, params["precision"]) for s in sigmas}
    write_metrics(METRICS, {"denoiser": metrics, "n_test": len(scored)}, device, params["precision"])
    manifest.write(OUT, figures(params, sigmas, train_sigma))
    return metrics


def _pure_noise_figures(mean_image: torch.Tensor, device: torch.device, seed: int) -> None:
    """The pure-noise model's outputs after each snapshot epoch, beside the mean training image."""
    for epoch, file in paths.snapshots("pure_noise").items():
        pure, _ = load_for_inference(file, device)
        outs = pure(torch.randn((SHOW, 1, 28, 28), generator=generator(device, seed), device=device))
        plots.image_grid(OUT / f"pure_noise_epoch_{epoch:02d}.png", [list(outs) + [mean_image]],
                         col_labels=[f"sample {i + 1}" for i in range(SHOW)] + ["mean train image"],
                         title=f"Denoising pure noise after epoch {epoch}")


def _test_scores(model: torch.nn.Module, scored: torch.Tensor, sigma: float, gen: torch.Generator,
                 precision: str) -> dict:
    """Mean MSE and PSNR of the denoiser on the scored test digits noised at sigma (noise from `gen`)."""
    device = next(model.parameters()).device
    err, db = [], []
    for i in range(0, len(scored), BATCH):
        clean = scored[i:i + BATCH].to(device)
        noise = torch.randn(clean.shape, generator=gen, device=device)
        with autocast(device, precision):
            out = model(clean + sigma * noise).float().clamp(0, 1)
        err.append(mse(out, clean)), db.append(psnr(out, clean))
    return {"mse": round(torch.cat(err).mean().item(), 6), "psnr": round(torch.cat(db).mean().item(), 3)}


def figures(params: dict, sigmas: list[float], train_sigma: float) -> list[manifest.Figure]:
    """The manifest entries of evaluate_denoiser, in the course's order."""
    den, pure = (f"{manifest.describe_training(params['models'][n])}, "
                 f"seed {params['seed']}" for n in ("denoiser", "pure_noise"))
    figs = [manifest.Figure("noising.png", "The noising process",
                            f"{SHOW} test digits (rows) with Gaussian noise z = x + σε at σ = "
                            f"{', '.join(map(str, sigmas))} (columns).", "B.1.2"),
            manifest.Figure("loss_denoiser.png", "Denoiser training loss",
                            f"Per-step training loss (log scale) of the single-step denoiser trained at "
                            f"σ={train_sigma} ({den}).", "B.1.2.1")]
    figs += [manifest.Figure(f"results_epoch_{e:02d}.png", f"Denoising results after epoch {e}",
                             f"Test digits (top), noised at σ={train_sigma} (middle), and the denoiser's output "
                             f"(bottom) after epoch {e} ({den}).", "B.1.2.1") for e in paths.snapshots("denoiser")]
    figs.append(manifest.Figure("ood.png", "Out-of-distribution noise levels",
                                f"One test digit noised at each σ (top) and the final denoiser's output (bottom); "
                                f"it was trained only at σ={train_sigma}.", "B.1.2.2"))
    figs.append(manifest.Figure("loss_pure_noise.png", "Pure-noise denoiser training loss",
                                f"Per-step training loss (log scale) of the UNet trained to map pure noise to digits "
                                f"({pure}).", "B.1.2.3"))
    figs += [manifest.Figure(f"pure_noise_epoch_{e:02d}.png", f"Denoising pure noise after epoch {e}",
                             f"Outputs for {SHOW} pure-noise inputs after epoch {e}, beside the mean training image: "
                             f"under an MSE loss the model learns to predict the mean of the data ({pure}).", "B.1.2.3")
             for e in paths.snapshots("pure_noise")]
    return figs
