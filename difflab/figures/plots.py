"""Figures from tensors: labelled image grids, GIFs of sampling trajectories, loss curves."""
from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from difflab.pipeline.errors import write_atomically  # noqa: E402

# Fixed metadata keeps PNG bytes identical across runs (matplotlib otherwise stamps its version/date).
_PNG_META = {"Software": None}


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N,C,H,W) or (C,H,W) floats in [0,1] -> uint8 HWC (or NHWC) arrays; grayscale keeps one channel."""
    a = images.detach().float().clamp(0, 1).mul(255).round().byte().cpu()
    return a.movedim(-3, -1).numpy()


def image_grid(path: str | Path, images: Sequence[Sequence[torch.Tensor]], *, row_labels: Sequence[str] = (),
               col_labels: Sequence[str] = (), title: str = "", cell: float = 1.2) -> Path:
    """Save a grid figure; images[r][c] is a (C,H,W) tensor in [0,1]. Labels name rows and columns."""
    return _save(grid_figure(images, row_labels=row_labels, col_labels=col_labels, title=title, cell=cell), path)


def grid_figure(images: Sequence[Sequence[torch.Tensor]], *, row_labels: Sequence[str] = (),
                col_labels: Sequence[str] = (), title: str = "", cell: float = 1.2) -> plt.Figure:
    """The figure image_grid saves, for callers that hand it on (as pixels) instead of saving it."""
    rows, cols = len(images), max(len(r) for r in images)
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols + (0.8 if row_labels else 0), cell * rows + 0.5),
                             squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([]), ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
            if c >= len(images[r]):
                ax.axis("off")
                continue
            img = to_uint8(images[r][c])
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255,
                      interpolation="nearest")
            if r == 0 and c < len(col_labels):
                ax.set_title(col_labels[c], fontsize=8)
            if c == 0 and r < len(row_labels):
                ax.set_ylabel(row_labels[r], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def pixels(fig: plt.Figure) -> np.ndarray:
    """The RGB pixels (H, W, 3 uint8) that _save would write as PNG, at the same 100 dpi; closes the figure."""
    fig.set_dpi(100)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb


def save_gif(path: str | Path, frames: Sequence[torch.Tensor], *, nrow: int = 10, scale: int = 3,
             duration_ms: int = 80) -> Path:
    """Animate a sampling trajectory: each frame is a batch (N,1,H,W) tiled into one image; holds the last frame."""
    from torchvision.utils import make_grid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pics = []
    for f in frames:
        grid = make_grid(f.float().clamp(0, 1), nrow=nrow, padding=1, pad_value=1.0)[:1]  # gray: one channel
        img = Image.fromarray(to_uint8(grid)[..., 0])
        pics.append(img.resize((img.width * scale, img.height * scale), Image.NEAREST))
    durations = [duration_ms] * (len(pics) - 1) + [1500]
    buffer = io.BytesIO()
    pics[0].save(buffer, format="GIF", save_all=True, append_images=pics[1:], duration=durations, loop=0,
                 optimize=False)
    write_atomically(path, buffer.getvalue())
    return path


def loss_curve(path: str | Path, curves: dict[str, tuple[Sequence[float], Sequence[float]]], *,
               title: str = "Training loss", xlabel: str = "step", smooth: int = 0) -> Path:
    """Log-scale loss curves; curves maps a label to (x, y). `smooth` > 1 overlays a moving average."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, (xs, ys) in curves.items():
        ys = np.asarray(ys, dtype=float)
        line, = ax.plot(xs, ys, lw=0.6, alpha=0.35 if smooth > 1 else 1.0)
        if smooth > 1 and len(ys) >= smooth:
            avg = np.convolve(ys, np.ones(smooth) / smooth, mode="valid")
            ax.plot(np.asarray(xs)[smooth - 1:], avg, lw=1.4, color=line.get_color(), label=label)
        else:
            line.set_label(label)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("MSE loss")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def guidance_sweep(path: str | Path, sweeps: dict[str, list[dict]], floor: tuple[float, float, float], *,
                   interval: Sequence[float] | None = None, title: str = "Classifier-free guidance sweep") -> Path:
    """Two panels, CFG scale vs intended-class accuracy and vs Fréchet distance, each point with its interval; sweeps
    maps a model to rows {gamma, accuracy, accuracy_lo, accuracy_hi, fid, fid_lo, fid_hi}, each with the same scores
    under "interval" when CFG was also applied only in the noise-level `interval` (drawn dashed, in the model's
    colour); the real-vs-real distance (value, lo, hi) is drawn as a dotted floor in its band."""
    fig, (acc, fd) = plt.subplots(1, 2, figsize=(9, 3.6))
    for i, (name, rows) in enumerate(sweeps.items()):
        gammas = [r["gamma"] for r in rows]
        lines = [(rows, "o-", name)]
        if interval is not None:
            lines.append(([r["interval"] for r in rows], "s--", f"{name}, CFG at {interval[0]:g}-{interval[1]:g}"))
        for ax, key in ((acc, "accuracy"), (fd, "fid")):
            for points, fmt, label in lines:
                err = [[r[key] - r[f"{key}_lo"] for r in points], [r[f"{key}_hi"] - r[key] for r in points]]
                ax.errorbar(gammas, [r[key] for r in points], yerr=err, fmt=fmt, capsize=3, color=f"C{i}",
                            label=label)
    fd.axhline(floor[0], ls=":", color="gray", label="real vs real")
    fd.axhspan(floor[1], floor[2], color="gray", alpha=0.15)
    acc.set_ylabel("intended-class accuracy")
    fd.set_ylabel("Fréchet distance (classifier features)")
    for ax in (acc, fd):
        ax.set_xlabel("CFG scale γ")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(textwrap.fill(title, 110), fontsize=10)  # a caption-long title wraps instead of being cut
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata=_PNG_META)
    plt.close(fig)
    write_atomically(path, buffer.getvalue())
    return path
