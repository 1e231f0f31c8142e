"""Part A's measurement figures: the digit-pair matrix of each anagram view and the hybrid cut-off sweep."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from difflab.figures.plots import _save, plt


def pair_matrices(path: str | Path, matrices: dict[str, tuple[torch.Tensor, torch.Tensor]], seeds: int) -> Path:
    """One 10 x 10 heat map per view of the mean alignment (colour) with the success rate written in each cell;
    matrices maps a view name to (success, alignment), each indexed [upright digit, digit after the view]."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 4.4), squeeze=False)
    for ax, (name, (success, alignment)) in zip(axes[0], matrices.items()):
        im = ax.imshow(alignment.numpy(), vmin=0, vmax=1, cmap="viridis")
        for i in range(10):
            for j in range(10):
                s = success[i, j].item()
                if s > 0:
                    ax.text(j, i, f"{s:.0%}" if seeds > 1 else "ok", ha="center", va="center", fontsize=6,
                            color="white" if alignment[i, j] < 0.5 else "black")
        ax.set_xticks(range(10)), ax.set_yticks(range(10))
        ax.set_xlabel("digit after the view"), ax.set_ylabel("upright digit")
        ax.set_title(name, fontsize=10)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="mean alignment A")
    fig.suptitle(f"Anagram digit pairs ({seeds} seeds each): colour = alignment, text = success", fontsize=10)
    return _save(fig, path)


def sweep_curve(path: str | Path, sigmas: Sequence[float], curves: dict[str, Sequence[float]], size: int) -> Path:
    """Hybrid success against the Gaussian cut-off sigma, one line per (low, high) digit pair, with the 50 % line."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, ys in curves.items():
        low, high = name.split("_")
        ax.plot(sigmas, ys, "o-", label=f"low {low} / high {high}")
    ax.axhline(0.5, ls="--", color="gray", label="50 %")
    if max(max(ys) for ys in curves.values()) < 0.5:
        ax.text(0.5, 0.62, "no cut-off reaches 50 % on any pair", transform=ax.transAxes, ha="center", fontsize=9,
                color="darkred")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel(f"Gaussian sigma at {size} px")
    ax.set_ylabel("success rate")
    ax.set_title("Hybrid images: success against the cut-off", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
