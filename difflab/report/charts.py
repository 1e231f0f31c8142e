"""Small charts the report draws from metrics JSON itself, as data: URIs so the page needs no extra file."""
from __future__ import annotations

import base64
import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def line_chart(xs: Sequence[float], ys: Sequence[float], *, xlabel: str, ylabel: str, title: str,
               intervals: Sequence[Sequence[float]] | None = None) -> str:
    """One small line chart with markers (and error bars from [lo, hi] intervals when given), as a PNG data URI.
    No Software stamp, so the same numbers give the same bytes."""
    fig, ax = plt.subplots(figsize=(4.8, 3.0))
    if intervals:
        below = [y - lo for y, (lo, _) in zip(ys, intervals)]
        above = [hi - y for y, (_, hi) in zip(ys, intervals)]
        ax.errorbar(xs, ys, yerr=[below, above], fmt="o-", capsize=3)
    else:
        ax.plot(xs, ys, "o-")
    ax.set_xticks(xs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return data_uri(buf.getvalue())
