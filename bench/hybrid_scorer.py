"""Does the hybrid judge agree with what a person sees? Hybrids made from real MNIST test digits, lowpass(A) +
c * highpass(B) with A != B, at contrasts c from 1 down to 0.1, plus plain digits, scored by the part_a stage's
judge (`mnist_judge`): the rate at which the close-up reading passes as B and the far-away reading as A.

Side by side, the close-up reading the judge used before issue 21: the high band's positive part stretched to
peak at 1 per image (fitted and calibrated on real digits seen the same way), which shows a faint band at full
contrast. The hybrid digits are test digits 5,000 on, which the judge never fitted or calibrated on.
Ends with `hybrid_scorer: <close-up pass rate for B at c = 1 and c = 0.1, at the pipeline's cut-off>`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from difflab.data.mnist import load_mnist
from difflab.part_a.filters import highpass, kernel_for, lowpass
from difflab.part_a.judge import DigitScorer, mnist_judge
from difflab.pipeline import paths
from difflab.pipeline.params import load

CONTRASTS = (1.0, 0.7, 0.5, 0.3, 0.2, 0.1)
FIRST_UNSEEN = 5000  # mnist_judge calibrates on the first 5,000 test digits


def pairs(mnist: Path, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """n (A, B) pairs of unseen test digits with different labels: (A, label of A, B, label of B)."""
    x, y = load_mnist(mnist, train=False)
    x, y = x[FIRST_UNSEEN:], y[FIRST_UNSEEN:]
    partner = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    keep = (y != y[partner]).nonzero().flatten()[:n]
    return x[keep], y[keep], x[partner[keep]], y[partner[keep]]


def stretched(kernel: int, sigma: float):
    """The old close-up reading: the high band's positive part scaled to peak at 1, image by image."""
    def reading(x: torch.Tensor) -> torch.Tensor:
        hp = highpass(x, kernel, sigma).clamp_min(0)
        return hp / hp.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
    return reading


def table(judge, sigma: float, a, ya, b, yb) -> dict[str, tuple[float, float, float, float]]:
    """Per case: (close-up passes as B, stretched close-up passes as B, far passes as A, both readings pass)."""
    kernel = kernel_for(sigma)
    far, near = judge.hybrid_scorers(kernel, sigma)
    old = DigitScorer.fit(judge.model, *judge.fit_digits, *judge.held_digits, stretched(kernel, sigma))
    low, high = lowpass(a, kernel, sigma), highpass(b, kernel, sigma)
    cases = {**{f"lowpass(A) + {c:g} highpass(B)": low + c * high for c in CONTRASTS},
             "lowpass(A) alone": low, "digit A, unfiltered": a, "digit B, unfiltered": b,
             "0.3 gray + highpass(B)": 0.3 + high, "0.3 gray + 0.1 highpass(B)": 0.3 + 0.1 * high}
    rows = {}
    for name, images in cases.items():
        close, afar = near.passes(images, yb), far.passes(images, ya)
        rows[name] = tuple(v.float().mean().item() for v in (close, old.passes(images, yb), afar, close & afar))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="300 pairs at the pipeline's cut-off only (~1 minute)")
    ap.add_argument("--mnist", default=str(paths.MNIST), help="MNIST root (torchvision layout), as fetch_data writes")
    ap.add_argument("--classifier", default=str(paths.CLASSIFIER))
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sigmas = load()["part_a"]["hybrid_sweep"]["sigmas"]
    metrics = Path(paths.PART_A_METRICS)
    best = json.loads(metrics.read_text())["hybrid_sweep"]["best_sigma"] if metrics.exists() else sigmas[0]
    n, sigmas = (300, [best]) if args.quick else (args.pairs, sigmas)
    judge = mnist_judge(args.classifier, args.mnist, torch.device("cpu"))
    a, ya, b, yb = pairs(Path(args.mnist), n)
    print(f"{len(a)} pairs of unseen MNIST test digits (A != B); pass rates: close-up as B (fixed-scale reading, "
          f"the stretched reading before issue 21), from afar as A, both")
    results = {}
    for sigma in sigmas:
        results[sigma] = rows = table(judge, sigma, a, ya, b, yb)
        gain = judge.hybrid_scorers(kernel_for(sigma), sigma)[1].reading.scale
        print(f"\nsigma {sigma:g} (kernel {kernel_for(sigma)}), close-up gain {gain:.2f}"
              f"{' (the cut-off the pipeline chose)' if sigma == best else ''}")
        print("| image | close-up reads B | stretched | from afar reads A | both |\n|---|---|---|---|---|")
        for name, values in rows.items():
            print(f"| {name} | " + " | ".join(f"{v:.1%}" for v in values) + " |")
    rows = results[best]
    print(f"hybrid_scorer: sigma {best:g}, close-up as B at c = 1 {rows['lowpass(A) + 1 highpass(B)'][0]:.1%}, "
          f"at c = 0.1 {rows['lowpass(A) + 0.1 highpass(B)'][0]:.1%} (stretched: "
          f"{rows['0.3 gray + 0.1 highpass(B)'][1]:.1%} of faint bands on gray pass)")


if __name__ == "__main__":
    main()
