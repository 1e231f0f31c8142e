"""A.1.8-1.9: visual anagrams and hybrid images, all through loops.illusion (anagram views averaged, band views
summed). With a judge (MNIST) each illusion is scored beside it, every digit pair is tried under each view
(`anagram_pairs`) and the hybrid cut-off is swept (`hybrid_sweep`) before the hybrids use the best one."""
from __future__ import annotations

from typing import Sequence

import torch

from difflab.figures import manifest
from difflab.part_a import loops as pa
from difflab.part_a.filters import kernel_for
from difflab.part_a.judge import Band, DigitScorer, hybrid_bands, score_views, summary, three_bands
from difflab.part_a.plots import pair_matrices, sweep_curve
from difflab.part_a.sections.context import PartA
from difflab.part_a.views import View, get_view, hybrid_views, three_band_views

SHOWN_SEEDS = 2  # illusions shown per prompt pair
_SCORE_NOTE = (" Beside each pair, over all its seeds: the success rate (every reading classified as its digit and as "
               "close to that class as 95 % of real digits) and the median alignment A and concealment C.")


def run(a: PartA) -> None:
    if a.judge:
        pair_matrix(a)
    anagrams(a)
    if a.judge:
        hybrid_sweep(a)
    hybrids(a)
    three_band_hybrids(a)


# ---------------------------------------------------------------- A.1.8 visual anagrams

def pair_matrix(a: PartA) -> None:
    """Every (upright, turned) digit pair under each of pair_views, pair_seeds anagrams each on a coarser
    schedule of pair_steps timesteps: which pairs can work at all (the figure and `anagram_pairs`)."""
    seeds = a.cfg.pair_seeds
    matrices, a.metrics["anagram_pairs"] = {}, {}
    for k, name in enumerate(a.cfg.pair_views):
        matrices[name] = _pair_rates(a, get_view(name), a.gen("A.1.8 pair matrix", k))
        success, alignment = matrices[name]
        ranked = sorted(((success[i, j].item(), alignment[i, j].item(), i, j) for i in range(10) for j in range(10)
                         if i != j), reverse=True)
        a.metrics["anagram_pairs"][name] = {
            f"{i}_{j}": {"success": round(s, 4), "alignment": round(al, 4)} for s, al, i, j in ranked[:3]}
    pair_matrices(a.out / "1_8_pair_matrix.png", matrices, seeds)
    a.figures.append(manifest.Figure(
        "1_8_pair_matrix.png", "Which digit pairs make anagrams",
        f"Mean alignment A (the smaller of the two target probabilities) over {seeds} anagrams per pair (row: "
        f"upright digit, column: digit after the view), {a.cfg.pair_steps} sampling steps; the number in a cell "
        "is the success rate (both readings classified as their digit and as close to it as 95 % of real "
        "digits). The best pairs per view are in the metrics (`anagram_pairs`).", "A.1.8"))


def _pair_rates(a: PartA, view: View, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(10, 10) success rate and mean alignment of pair_seeds anagrams per (upright, turned) digit pair."""
    seeds = a.cfg.pair_seeds
    pairs = [(i, j) for i in range(10) for j in range(10) for _ in range(seeds)]
    ts = pa.inference_timesteps(a.b.num_train_timesteps, a.cfg.pair_steps)
    # digit prompts straight from the backbone: the MNIST embedding is a one-hot row, no model to run
    uprights, turneds = (a.b.embed([str(p[side]) for p in pairs]).to(a.b.device) for side in (0, 1))
    x = _sample(a, [View(), view], [uprights, turneds], "mean", ts, gen)
    scores = _anagram_scores(a, a.b.decode(x), view, [torch.tensor([i for i, _ in pairs]),
                                                       torch.tensor([j for _, j in pairs])])
    return (scores["success"].float().view(10, 10, seeds).mean(-1),
            scores["alignment"].view(10, 10, seeds).mean(-1))


def anagrams(a: PartA) -> None:
    n, rows, labels, scores = _illusion_count(a), [], [], {}
    for k, (view_name, upright, turned) in enumerate(a.cfg.prompts.anagrams):
        view = get_view(view_name)
        x = _sample(a, [View(), view], [a.emb([upright] * n), a.emb([turned] * n)], "mean", a.ts,
                    a.gen("A.1.8 anagrams", k))
        label = f"{upright}\n{view_name}:\n{turned}"
        if a.judge:
            digits = (a.judge.label(upright), a.judge.label(turned))
            label = _judged(scores, f"{view_name}_{digits[0]}_{digits[1]}",
                            _anagram_scores(a, a.b.decode(x), view, digits), label)
        shown = a.upsampled(x[:SHOWN_SEEDS], [upright] * SHOWN_SEEDS, "A.1.8 anagrams", k)
        rows.append([im for pair in zip(shown, _viewed(a, shown, view)) for im in pair])
        labels.append(label)
    if a.judge:
        a.metrics["anagrams"] = scores
    a.figure("1_8_anagrams.png", "A.1.8", "Visual anagrams",
             "eps = (eps_1(x_t) + inverse_view(eps_2(view(x_t)))) / 2, both with CFG: the image reads as the "
             f"first prompt upright and as the second after the view. The first {SHOWN_SEEDS} seeds of each "
             f"pair, not picked.{_SCORE_NOTE if a.judge else ''}", rows, labels, ["upright", "view"] * SHOWN_SEEDS)


def _viewed(a: PartA, images01: torch.Tensor, view: View) -> torch.Tensor:
    return a.b.decode(view.view(a.b.encode(images01)))


def _anagram_scores(a: PartA, images01: torch.Tensor, view: View, digits: Sequence) -> dict:
    plain = a.judge.scorer()
    return score_views([(plain, images01), (plain, _viewed(a, images01, view))], digits)


# ---------------------------------------------------------------- A.1.9 hybrid images

def hybrid_sweep(a: PartA) -> None:
    """Success and alignment of every hybrid pair against the cut-off sigma (at the backbone's size, kernel
    spanning +-3 sigma); the best sigma becomes A.1.9's filter (`hybrid_sweep` in the metrics)."""
    sigmas, seeds = a.cfg.sweep_sigmas, a.cfg.sweep_seeds
    curves: dict[str, list[float]] = {f"{a.judge.label(lo)}_{a.judge.label(hi)}": []
                                      for lo, hi in a.cfg.prompts.hybrids}
    alignment: list[float] = []
    for k, sigma in enumerate(sigmas):
        success, mean_alignment = _sweep_point(a, sigma, a.gen("A.1.9 sigma sweep", k))
        for name, ok in zip(curves, success):
            curves[name].append(round(ok.item(), 4))
        alignment.append(mean_alignment)
    mean = [sum(c[k] for c in curves.values()) / len(curves) for k in range(len(sigmas))]
    best = max(range(len(mean)), key=lambda k: (mean[k], alignment[k]))
    a.hybrid_filter = (kernel_for(sigmas[best]), sigmas[best])
    passed = max(max(c) for c in curves.values()) >= 0.5
    verdict = ("" if passed else " No setting reaches 50 % success on any pair: at 28 px no cut-off separates "
               "two digits that a classifier and the realism test both accept.")
    a.metrics["hybrid_sweep"] = {"sigmas": list(sigmas), "success": curves, "best_sigma": sigmas[best],
                                 "any_pair_reaches_half": passed}
    sweep_curve(a.out / "1_9_sigma_sweep.png", sigmas, curves, a.b.image_size)
    a.figures.append(manifest.Figure(
        "1_9_sigma_sweep.png", "Hybrid success against the cut-off",
        f"Success rate of {seeds} hybrids per pair for each Gaussian sigma at {a.b.image_size} px (kernel "
        f"2 ceil(3 sigma) + 1): the low-pass reading must read as the first digit and look like blurred real "
        f"digits, the high-pass reading as the second and look like high-passed real digits. A.1.9 uses the best "
        f"sigma, {sigmas[best]:g}.{verdict}", "A.1.9"))


def _sweep_point(a: PartA, sigma: float, gen: torch.Generator) -> tuple[torch.Tensor, float]:
    """sweep_seeds hybrids of every pair at one cut-off: the success rate per pair and the mean alignment."""
    seeds, hybrids = a.cfg.sweep_seeds, a.cfg.prompts.hybrids
    pairs = [(a.judge.label(lo), a.judge.label(hi)) for lo, hi in hybrids]
    kernel = kernel_for(sigma)
    lows, highs = ([pair[side] for pair in hybrids for _ in range(seeds)] for side in (0, 1))
    x = _hybrid_batch(a, lows, highs, kernel, sigma, gen)
    scores = _hybrid_scores(a, a.b.decode(x), [torch.tensor([lo for lo, _ in pairs]).repeat_interleave(seeds),
                                               torch.tensor([hi for _, hi in pairs]).repeat_interleave(seeds)],
                            kernel, sigma)
    return scores["success"].float().view(len(pairs), seeds).mean(1), scores["alignment"].mean().item()


def hybrids(a: PartA) -> None:
    n, rows, labels, scores = _illusion_count(a), [], [], {}
    kernel, sigma = a.hybrid_filter
    scorers = a.judge.hybrid_scorers(kernel, sigma) if a.judge else None
    for k, (low, high) in enumerate(a.cfg.prompts.hybrids):
        x = _hybrid_batch(a, [low] * n, [high] * n, kernel, sigma, a.gen("A.1.9 hybrids", k))
        label = f"low-pass:\n{low}\nhigh-pass:\n{high}"
        if a.judge:
            digits = (a.judge.label(low), a.judge.label(high))
            label = _judged(scores, f"{digits[0]}_{digits[1]}",
                            _hybrid_scores(a, a.b.decode(x), digits, kernel, sigma), label)
        shown = a.upsampled(x[:SHOWN_SEEDS], [low] * SHOWN_SEEDS, "A.1.9 hybrids", k)
        rows.append(_with_bands(shown, hybrid_bands(*_at_display(a, shown, sigma)), scorers))
        labels.append(label)
    if a.judge:
        a.metrics["hybrids"] = scores
        a.metrics["hybrid_filter"] = {"kernel": kernel, "sigma": sigma}
    a.figure("1_9_hybrids.png", "A.1.9", "Hybrid images",
             f"eps = lowpass(eps_1) + highpass(eps_2), Gaussian kernel {kernel}, sigma {sigma:.3g} at "
             f"{a.b.image_size} px: the low-pass prompt from afar, the high-pass prompt up close. The first "
             f"{SHOWN_SEEDS} seeds of each pair, not picked. {_bands_note(scorers)}{_SCORE_NOTE if a.judge else ''}",
             rows, labels, ["hybrid", "low-pass", "high-pass"] * SHOWN_SEEDS)


def _hybrid_batch(a: PartA, lows: Sequence[str], highs: Sequence[str], kernel: int, sigma: float,
                  gen: torch.Generator) -> torch.Tensor:
    return _sample(a, hybrid_views(kernel, sigma), [a.emb(lows), a.emb(highs)], "sum", a.ts, gen)


def _hybrid_scores(a: PartA, images01: torch.Tensor, digits: Sequence, kernel: int, sigma: float) -> dict:
    return score_views([(scorer, images01) for scorer in a.judge.hybrid_scorers(kernel, sigma)], digits)


def three_band_hybrids(a: PartA) -> None:
    """Factorized diffusion's three-band hybrid: one prompt for each of the low, middle and high frequencies."""
    triples = a.cfg.prompts.three_band
    if not triples:
        return
    scale = a.b.image_size / 64  # three_band_sigmas are given at 64 px, like the course's filters
    low, high = ((kernel_for(s * scale), s * scale) for s in a.cfg.three_band_sigmas)
    n, rows, labels, scores = _illusion_count(a), [], [], {}
    scorers = a.judge.band_scorers(("three band", low, high), three_bands(low, high)) if a.judge else None
    for k, prompts in enumerate(triples):
        x = _sample(a, three_band_views(low, high), [a.emb([p] * n) for p in prompts], "sum", a.ts,
                    a.gen("A.1.9 three band", k))
        label = "\n".join(f"{band}: {p}" for band, p in zip(("low", "mid", "high"), prompts))
        if a.judge:
            digits = [a.judge.label(p) for p in prompts]
            images = a.b.decode(x)
            label = _judged(scores, "_".join(map(str, digits)), score_views([(s, images) for s in scorers], digits),
                            label)
        shown = a.upsampled(x[:SHOWN_SEEDS], [prompts[0]] * SHOWN_SEEDS, "A.1.9 three band", k)
        rows.append(_with_bands(shown, three_bands(_at_display(a, shown, low[1]), _at_display(a, shown, high[1])),
                                scorers))
        labels.append(label)
    if a.judge:
        a.metrics["three_band"] = scores
    a.figure("1_9_three_band.png", "A.1.9", "Three-band hybrid images",
             f"eps = low(eps_1) + mid(eps_2) + high(eps_3) (factorized diffusion): Gaussian sigmas "
             f"{low[1]:.3g} and {high[1]:.3g} at {a.b.image_size} px split low, middle and high frequencies. The "
             f"first {SHOWN_SEEDS} seeds, not picked. {_bands_note(scorers)}{_SCORE_NOTE if a.judge else ''}", rows,
             labels, ["hybrid", "low", "mid", "high"] * SHOWN_SEEDS)


def _with_bands(shown: torch.Tensor, bands: Sequence[Band], scorers: Sequence[DigitScorer] | None) -> list:
    """A figure row: each shown image followed by its bands. With a judge the bands are drawn exactly as its scorers
    read them (the judge is MNIST's, whose images are shown at the size they are scored); without one (photos) each
    band is drawn at its real amplitude, the higher bands around mid-gray."""
    if scorers:
        drawn = [s.reading(shown) for s in scorers]
    else:
        drawn = [bands[0](shown), *((b(shown) + 0.5).clamp(0, 1) for b in bands[1:])]
    return [im for i in range(len(shown)) for im in (shown[i], *(d[i] for d in drawn))]


def _bands_note(scorers: Sequence[DigitScorer] | None) -> str:
    """The caption's words on how the bands are drawn."""
    if not scorers:
        return "The higher bands are drawn at their real amplitude around mid-gray."
    gains = " and ".join(f"{s.reading.scale:.2f}" for s in scorers[1:])
    return ("The bands are drawn as the judge reads them: the low band as it is, each higher band as bright strokes, "
            f"its positive part times one gain fitted on real digits ({gains}) and the same for every image, so a "
            "faint band looks faint.")


def _at_display(a: PartA, shown: torch.Tensor, sigma: float) -> tuple[int, float]:
    """The Gaussian filter (kernel, sigma) of the backbone's size at the size of the shown images."""
    s = sigma * (shown.shape[-1] / a.b.image_size)
    return kernel_for(s), s


# ---------------------------------------------------------------- shared

def _sample(a: PartA, views: Sequence[View], conds: Sequence[torch.Tensor], reduction: str,
            timesteps: Sequence[int], gen: torch.Generator) -> torch.Tensor:
    """One illusion per row of the conds (one tensor per view), all in one batch."""
    n = len(conds[0])
    fn = pa.illusion(a.b, views, conds, a.uncond(n), a.cfg.cfg_scale, reduction)
    return pa.sample(a.b, n, timesteps, fn, gen)


def _illusion_count(a: PartA) -> int:
    """Illusions per prompt pair: n_seeds to score when there is a judge, at least the SHOWN_SEEDS shown."""
    return max(SHOWN_SEEDS, a.cfg.n_seeds if a.judge else 0)


def _judged(scores: dict, name: str, raw: dict, label: str) -> str:
    """Store the summary of raw scores under name; the label with the score under it."""
    score = scores[name] = summary(raw)
    return (f"{label}\nsuccess {score['success']:.0%}\nA {score['alignment']['q50']:.2f} "
            f"C {score['concealment']['q50']:.2f}")
