"""reports/index.html: every deliverable from the stages' manifests in the course's order, metric tables built with
pandas from the metrics JSON and DVCLive logs, and the params that made them. Relative links only, so the page
opens from file:// and travels with the reports/ directory."""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from difflab.figures import manifest, plots
from difflab.figures.training_log import read_curve
from difflab.pipeline.errors import write_atomically
from difflab.report import charts
from difflab.sampling.choice import SamplerChoice

TEMPLATES = Path(__file__).parent / "templates"

PARTS = {"A": "Part A: The Power of Diffusion Models", "B": "Part B: Diffusion and Flow Models from Scratch (MNIST)"}
SECTIONS = {
    "A.0": "Setup: sampling from the model",
    "A.1.1": "Implementing the forward process",
    "A.1.2": "Classical denoising",
    "A.1.3": "One-step denoising",
    "A.1.4": "Iterative denoising",
    "A.1.5": "Diffusion model sampling",
    "A.1.6": "Classifier-free guidance",
    "A.1.7": "Image-to-image translation (SDEdit)",
    "A.1.7.1": "Editing hand-drawn and web images",
    "A.1.7.2": "Inpainting",
    "A.1.7.3": "Text-conditional image-to-image translation",
    "A.1.8": "Visual anagrams",
    "A.1.9": "Hybrid images",
    "A.eval": "Part A numbers",
    "B.1.2": "Using the UNet to train a denoiser",
    "B.1.2.1": "Training the single-step denoiser",
    "B.1.2.2": "Out-of-distribution testing",
    "B.1.2.3": "Denoising pure noise",
    "B.2.2": "Training the time-conditioned UNet",
    "B.2.3": "Sampling from the time-conditioned UNet",
    "B.2.5": "Training the class-conditioned UNet",
    "B.2.6": "Sampling from the class-conditioned UNet",
    "B.eval": "Measured results: Fréchet distance, intended-class accuracy, guidance sweep",
}


@dataclass
class RenderedFigure:
    """A figure as the report shows it (a stage writes it as a figures.manifest.Figure)."""
    src: str        # relative to reports/
    title: str
    caption: str
    missing: bool = False


@dataclass
class Table:
    title: str
    html: str
    caption: str = ""


@dataclass
class Link:
    href: str       # relative to reports/, or #anchor
    text: str


@dataclass
class Section:
    id: str
    title: str
    figures: list[RenderedFigure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)


def anchor(section_id: str) -> str:
    """The HTML id of a section (A.1.8 -> sec-A-1-8)."""
    return "sec-" + re.sub(r"[^A-Za-z0-9]+", "-", section_id)


def section_key(section_id: str) -> tuple:
    """Course order: A before B, numbers numerically, named sections (B.eval) after the numbered ones."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in section_id.split("."))


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _html(df: pd.DataFrame, **kw) -> str:
    """A metrics table; the index becomes the first column, so its name heads that column."""
    return df.reset_index().to_html(classes="metrics", border=0, na_rep="–", index=False, **kw)


def with_interval(value: float, interval: Sequence[float] | None = None, fmt: str = ".2f",
                  plus_minus: bool = True) -> str:
    """A number as a table shows it: `value ± half-width` when its interval [lo, hi] is symmetric about it at the
    shown precision (and `plus_minus`), else `value (lo–hi)` (quantiles, Wilson intervals); the bare value without
    an interval or when the interval collapses onto it."""
    shown = f"{value:{fmt}}"
    if interval is None:
        return shown
    lo, hi = (f"{v:{fmt}}" for v in interval)
    if lo == hi == shown:
        return shown
    if plus_minus and f"{interval[1] - value:{fmt}}" == f"{value - interval[0]:{fmt}}":
        return f"{shown} ± {(interval[1] - interval[0]) / 2:{fmt}}"
    return f"{shown} ({lo}–{hi})"


_INTERVAL = re.compile(r"_ci\d*$")  # `psnr_ci95: [lo, hi]` beside `psnr` is psnr's interval


def interval_of(metrics: dict, key: str) -> list[float] | None:
    """The [lo, hi] of a sibling `<key>_ci95` (any `<key>_ci<level>`), if the metrics carry one."""
    return next((v for k, v in metrics.items() if k != key and _INTERVAL.sub("", k) == key), None)


def metric_cell(metrics: dict, key: str, fmt: str = ".2f") -> str:
    """metrics[key] with its interval: a {q10, q50, q90} dict as the median with q10–q90, a number with its
    `<key>_ci95` interval when there is one."""
    value = metrics[key]
    if isinstance(value, dict):
        return with_interval(value["q50"], (value["q10"], value["q90"]), fmt, plus_minus=False)
    return with_interval(value, interval_of(metrics, key), fmt)


def metric_keys(metrics: dict) -> list[str]:
    """The keys of a metrics dict that are values, not another value's interval."""
    return [k for k in metrics if not _INTERVAL.search(k)]


def _figures(reports: Path, directory: Path) -> dict[str, list[RenderedFigure]]:
    """A stage's manifest entries grouped by section, with paths made relative to reports/."""
    out: dict[str, list[RenderedFigure]] = {}
    for f in manifest.read(directory):
        path = directory / f.file
        out.setdefault(f.section, []).append(RenderedFigure(path.relative_to(reports).as_posix(), f.title, f.caption,
                                                    missing=not path.is_file()))
    return out


def denoiser_table(metrics: dict) -> Table:
    """Test MSE / PSNR of the final denoiser at each noise level."""
    rows = {float(k.removeprefix("sigma_")): v for k, v in metrics["denoiser"].items()}
    df = pd.DataFrame.from_dict(rows, orient="index").rename_axis("σ")
    n = f"the first {metrics['n_test']:,} " if "n_test" in metrics else ""
    return Table("Denoiser on the test digits", _html(df, float_format=lambda v: f"{v:.4g}"),
                 f"Mean squared error and PSNR (dB) of the clamped output against the clean digit, per noise level σ, "
                 f"over {n}test digits.")


def plus_minus(metrics: dict, key: str, fmt: str = "{:.3f}") -> str | None:
    """`value ± half-width` of the interval metrics[key + "_lo"] .. metrics[key + "_hi"]; the bare value when the
    metrics carry no interval; None when they lack the key."""
    value = metrics.get(key)
    if value is None:
        return None
    if f"{key}_lo" not in metrics:
        return fmt.format(value)
    return f"{fmt.format(value)} ± {fmt.format((metrics[key + '_hi'] - metrics[key + '_lo']) / 2)}"


SPREAD = ("Each number is followed by the half-width of its 95% bootstrap interval over the n samples (200 "
          "resamples); a difference is claimed only where the intervals do not overlap.")


def sample_quality_table(scores: dict[str, dict], params: dict) -> Table:
    """One row per sampled model: Fréchet distance beside the real-vs-real floor, precision, recall and legibility
    beside their real-digit ceilings, each with its interval."""
    rows = []
    for name, s in scores.items():
        guided = "accuracy" in s
        rows.append({"model": name, "kind": params["models"].get(name, {}).get("kind", "?"),
                     "CFG γ": f"{params['gamma']:g}" if guided else None, "n": s["n"],
                     "Fréchet distance": plus_minus(s, "fid", "{:.1f}"),
                     "real vs real": plus_minus(s, "fid_baseline", "{:.1f}"),
                     "ratio": f"{s['fid'] / s['fid_baseline']:.2f}" if s["fid_baseline"] else None,
                     "precision": plus_minus(s, "precision"), "real precision": plus_minus(s, "precision_real"),
                     "recall": plus_minus(s, "recall"), "real recall": plus_minus(s, "recall_real"),
                     "legibility": plus_minus(s, "legibility"),
                     "real-digit legibility": plus_minus(s, "legibility_real")})
    df = pd.DataFrame(rows).set_index("model")
    choice = SamplerChoice.from_params(params["sample"])
    how = "; ".join(sorted({choice.describe(family, params["ddpm"]["num_ts"]) for family in ("ddpm", "flow")}))
    return Table("Sample quality", _html(df.fillna("–")),
                 f"Scored against the MNIST test digits in the scoring classifier's 128-d penultimate features; the "
                 f"'real' columns score n held-out training digits (no classifier trained on them) the same way: "
                 f"the floor of the Fréchet distance and the ceilings of the rest at this n. Samplers: {how}. "
                 f"Fréchet distance: between Gaussians fitted to the features. Precision (fidelity) and recall "
                 f"(coverage), Kynkäänniemi et al. 2019: the share of samples within the 3-nearest-neighbour balls "
                 f"of n test digits, and the share of those test digits within the samples' balls. Legibility is the "
                 f"share of samples that read as a digit: the classifier gives one digit probability ≥ 0.9, and the "
                 f"Mahalanobis distance of the sample's features to that digit's mean test-digit features is within "
                 f"that of 99% of test digits. {SPREAD}")


def class_table(scores: dict[str, dict]) -> Table | None:
    """Intended-class accuracy and the classification accuracy score of the class-conditioned models."""
    rows = [{"model": name, "intended-class accuracy": plus_minus(s, "accuracy"), "CAS": plus_minus(s, "cas"),
             "real-trained CAS": plus_minus(s, "cas_real")} for name, s in scores.items() if "accuracy" in s]
    if not rows:
        return None
    return Table("Class-conditioned samples", _html(pd.DataFrame(rows).set_index("model").fillna("–")),
                 "Intended-class accuracy: the share of samples the scoring classifier labels as the digit asked "
                 "for. Classification accuracy score (CAS, Ravuri & Vinyals 2019): the scoring classifier's "
                 "architecture trained on the n samples and their intended digits only, then tested on the MNIST "
                 "test digits; 'real-trained' is the same recipe on n held-out real digits. A model that draws one "
                 "digit well for every prompt scores high accuracy and precision but a low CAS. The CAS interval "
                 f"resamples the test digits only, not the classifier's training. {SPREAD}")


def per_class_table(scores: dict[str, dict]) -> Table | None:
    """Intended-class accuracy per digit for the class-conditioned models."""
    rows = {name: s["per_class"] for name, s in scores.items() if "per_class" in s}
    if not rows:
        return None
    df = pd.DataFrame.from_dict(rows, orient="index").astype(float).rename_axis("model")
    return Table("Intended-class accuracy per digit", _html(df, float_format=lambda v: f"{v:.2f}"),
                 "Share of samples conditioned on each digit (columns) that the classifier assigns to that digit.")


GUIDANCE_COLUMNS = {"accuracy": ("accuracy", "{:.3f}"), "fid": ("Fréchet distance", "{:.1f}"),
                    "precision": ("precision", "{:.3f}"), "recall": ("recall", "{:.3f}"), "cas": ("CAS", "{:.3f}")}


def guidance_table(metrics: dict) -> Table:
    """Accuracy, Fréchet distance, precision, recall and CAS per model and CFG scale, each with its interval; when
    the sweep had a guidance interval, a second row per scale for CFG only inside it."""
    interval = metrics.get("interval")
    inside = f"s in [{interval[0]:g}, {interval[1]:g}]" if interval else None
    rows = []
    for name, by_gamma in metrics.items():
        if not isinstance(by_gamma, dict) or name == "run":
            continue
        for key, vals in by_gamma.items():
            for where, scores in (("every step", vals), (inside, vals.get("interval"))):
                if scores is not None:
                    rows.append({"model": name, "γ": float(key.removeprefix("gamma_")), "CFG at": where,
                                 **{title: plus_minus(scores, k, fmt) for k, (title, fmt) in GUIDANCE_COLUMNS.items()}})
    titles = [title for title, _ in GUIDANCE_COLUMNS.values()]
    df = pd.DataFrame(rows).pivot(index=["γ", "CFG at"] if interval else "γ", columns="model",
                                  values=titles).dropna(axis=1, how="all")
    df.columns = [f"{model} {title}" for title, model in df.columns]
    real = ", ".join(f"{label} {text}" for label, key, fmt in (
        ("Fréchet distance", "fid_baseline", "{:.1f}"), ("precision", "precision_real", "{:.3f}"),
        ("recall", "recall_real", "{:.3f}"), ("CAS", "cas_real", "{:.3f}"))
        if (text := plus_minus(metrics, key, fmt)) is not None)
    where = (f" Rows \"{inside}\" guide only the steps at those noise levels (1 = pure noise, 0 = clean), from the "
             "same noise as the rows guiding every step." if interval else "")
    return Table("Guidance sweep", _html(df.fillna("–")),
                 f"{metrics['n']} samples per point, scored as in the tables above; {metrics['n']} held-out real "
                 f"digits score {real}.{where} {SPREAD}")


def training_table(live: dict[str, Path]) -> Table | None:
    """Steps, epochs and losses of every training run, read from its DVCLive logs."""
    rows = []
    for name, d in live.items():
        steps, losses = read_curve(d)
        _, epochs = read_curve(d, "epoch/loss")
        rows.append({"model": name, "steps": len(steps), "epochs": len(epochs), "first epoch loss": epochs[0],
                     "final epoch loss": epochs[-1], "min step loss": min(losses)})
    if not rows:
        return None
    return Table("Training runs", _html(pd.DataFrame(rows).set_index("model"), float_format=lambda v: f"{v:.4g}"),
                 "From each model's DVCLive logs (reports/train/<model>): per-epoch mean training loss.")


def loss_curves_png(live: dict[str, Path]) -> str | None:
    """Every model's training loss on one log-scale chart, as a data: URI so the page needs no extra file."""
    curves = {name: read_curve(d) for name, d in live.items()}
    if not curves:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = plots.loss_curve(Path(tmp) / "loss.png", curves, title="Training loss, every model", smooth=25)
        return charts.data_uri(path.read_bytes())


def denoise_table(pa: dict) -> Table:
    """A.1.2-1.4: PSNR of the blur, one-step and iterative estimates, one row per noise level t."""
    names = {"blur": "blur (A.1.2)", "one_step": "one-step (A.1.3)", "iterative": "iterative (A.1.4)"}
    T = pa["num_train_timesteps"]
    rows = {f"{int(key[1:])} ({int(key[1:]) / T:.2f} T)": {names.get(k, k): metric_cell(psnr, k)
                                                          for k in metric_keys(psnr)}
            for key, psnr in pa["denoise_psnr"].items()}
    return Table("Denoising: PSNR to the clean test image (dB)",
                 _html(pd.DataFrame.from_dict(rows, orient="index").rename_axis("t")),
                 f"The test image noised to x_t (T = {T}), then denoised three ways: a Gaussian blur, one step of the "
                 "model's noise estimate, and iterative denoising down the strided schedule from t.")


def sdedit_figure(pa: dict) -> RenderedFigure:
    """A.1.7: mean PSNR of the SDEdit results to their inputs against the start index, as a small chart."""
    sdedit = pa["sdedit_psnr"]
    starts = sorted(metric_keys(sdedit), key=lambda k: int(k[1:]))
    intervals = [iv for k in starts if (iv := interval_of(sdedit, k))]
    src = charts.line_chart([int(k[1:]) for k in starts], [sdedit[k] for k in starts], xlabel="i_start",
                            ylabel="PSNR to the input (dB)", title="SDEdit (A.1.7): PSNR to the input",
                            intervals=intervals if len(intervals) == len(starts) else None)
    points = ", ".join(f"{int(k[1:])}: {metric_cell(sdedit, k, '.1f')}" for k in starts)
    return RenderedFigure(src, "SDEdit: PSNR to the input against i_start",
                          f"Mean PSNR (dB) of the SDEdit results of the test images to the images themselves, per "
                          f"strided start index i_start (stride {pa['stride']} of T = {pa['num_train_timesteps']}): "
                          f"the smaller i_start, the more noise and the bigger the edit. i_start: dB = {points}.")


ILLUSIONS = {"anagrams": "anagram", "hybrids": "hybrid", "three_band": "three-band"}
READINGS = {"hybrids": "far / close", "three_band": "low / mid / high"}


def _illusion_name(kind: str, key: str) -> str:
    """`flip_2_5` -> `anagram, flip: 2 / 5`; `4_9` -> `hybrid, far / close: 4 / 9`; likewise three-band."""
    if kind == "anagrams":
        view, upright, turned = key.rsplit("_", 2)
        return f"anagram, {view}: {upright} / {turned}"
    return f"{ILLUSIONS[kind]}, {READINGS[kind]}: {' / '.join(key.split('_'))}"


def illusions_table(pa: dict, n_seeds: int | None) -> Table | None:
    """A.1.8-1.9: one row per scored illusion: success, and the median (q10–q90) of alignment A and concealment C."""
    rows = {_illusion_name(kind, key): {"success": metric_cell(s, "success"),
                                        "A: median (q10–q90)": metric_cell(s, "alignment"),
                                        "C: median (q10–q90)": metric_cell(s, "concealment")}
            for kind in ILLUSIONS for key, s in pa.get(kind, {}).items()}
    if not rows:
        return None
    seeds = f"{n_seeds} seeds" if n_seeds else "the seeds"
    return Table("Illusions: success, alignment A and concealment C",
                 _html(pd.DataFrame.from_dict(rows, orient="index").rename_axis("illusion")),
                 f"Over {seeds} per illusion. Success: every reading (upright and viewed; from afar and close up; "
                 "each band) is classified as its digit and lies as close to that digit as 95 % of real digits. "
                 "A: the smaller of the readings' target probabilities; C: the mean over readings of the target's "
                 "probability among the illusion's digits (Visual Anagrams).")


def pair_table(pairs: dict) -> Table:
    """A.1.8's pair matrix, its best pairs per view (the whole matrix is the figure's heatmap)."""
    rows = [{"view": view, "upright / turned": key.replace("_", " / "), "success": metric_cell(s, "success"),
             "mean A": metric_cell(s, "alignment")} for view, best in pairs.items() for key, s in best.items()]
    return Table("Anagram pair matrix: the best pairs per view", _html(pd.DataFrame(rows).set_index("view")),
                 "Ranked by success, then mean alignment, over the few seeds and coarse schedule of the matrix; "
                 "every pair is in the heatmap linked below.")


def hybrid_sweep_table(sweep: dict) -> Table:
    """A.1.9's cut-off sweep: success per hybrid pair (rows) and Gaussian sigma (columns)."""
    rows = {f"{low} / {high}": {f"σ {sigma:g}": f"{v:.2f}" for sigma, v in zip(sweep["sigmas"], curve)}
            for (low, high), curve in ((key.split("_"), c) for key, c in sweep["success"].items())}
    verdict = "" if sweep["any_pair_reaches_half"] else " No σ reaches 50 % success on any pair."
    return Table("Hybrid success against the cut-off σ", _html(pd.DataFrame.from_dict(rows, orient="index")
                                                              .rename_axis("low / high")),
                 f"Success rate of hybrids per pair at each Gaussian σ; A.1.9 uses the best, σ = "
                 f"{sweep['best_sigma']:g}.{verdict}")


PART_A_DONE = {"num_train_timesteps", "stride", "denoise_psnr", "sdedit_psnr", "anagram_pairs", *ILLUSIONS,
               "hybrid_sweep", "hybrid_filter", "run"}


def part_a_numbers(section: Section, pa: dict, params: dict) -> None:
    """reports/metrics/part_a.json as a reader wants it: tables, a chart, a few sentences, the raw file a link
    away; keys this does not know yet still show, as key/value rows."""
    if "denoise_psnr" in pa:
        section.tables.append(denoise_table(pa))
    if "sdedit_psnr" in pa:
        section.figures.append(sdedit_figure(pa))
    if table := illusions_table(pa, params.get("part_a", {}).get("n_seeds")):
        section.tables.append(table)
    if "hybrid_sweep" in pa:
        section.tables.append(hybrid_sweep_table(pa["hybrid_sweep"]))
    if "anagram_pairs" in pa:
        section.tables.append(pair_table(pa["anagram_pairs"]))
        section.links.append(Link(f"#{anchor('A.1.8')}", "every digit pair: the pair-matrix heatmap (A.1.8)"))
    if "num_train_timesteps" in pa and "stride" in pa:
        section.notes.append(f"T = {pa['num_train_timesteps']} training timesteps, strided every {pa['stride']}.")
    if f := pa.get("hybrid_filter"):
        section.notes.append(f"A.1.9's hybrid filter: Gaussian kernel {f['kernel']}, σ {f['sigma']:g}.")
    if r := pa.get("run"):
        section.notes.append("Ran on " + ", ".join(f"{k} {v}" for k, v in r.items()) + ".")
    if rest := {k: v for k, v in pa.items() if k not in PART_A_DONE}:
        section.tables.append(flat_table("Other Part A numbers", rest, "Keys of part_a.json shown as they are."))
    section.links.append(Link("metrics/part_a.json", "every number above, raw: metrics/part_a.json"))


def flat_table(title: str, metrics: dict, caption: str) -> Table:
    """Any metrics JSON as a key/value table (nested keys joined with dots)."""
    flat = pd.json_normalize(metrics, sep=".").T.rename(columns={0: "value"}).rename_axis("metric")
    flat["value"] = [f"{v:.6g}" if isinstance(v, float) else v for v in flat["value"]]
    return Table(title, _html(flat), caption)


def build(reports: str | Path, params: dict) -> dict:
    """Everything the template needs, read from the reports tree."""
    reports = Path(reports)
    metrics_dir = reports / "metrics"
    figures: dict[str, list[RenderedFigure]] = {}
    sample_dirs = [reports / "samples" / name for name in params.get("sampling", {})]
    for directory in [reports / "part_a", reports / "denoiser", reports / "guidance", *sample_dirs]:
        for section, figs in _figures(reports, directory).items():
            figures.setdefault(section, []).extend(figs)
    sections = {sid: Section(sid, SECTIONS.get(sid, sid), figs) for sid, figs in figures.items()}

    def section(sid: str) -> Section:
        return sections.setdefault(sid, Section(sid, SECTIONS.get(sid, sid)))

    part_a_run = (reports / "part_a" / manifest.NAME).is_file()
    if part_a_run and (pa := _read_json(metrics_dir / "part_a.json")):
        part_a_numbers(section("A.eval"), pa, params)
    if den := _read_json(metrics_dir / "denoiser.json"):
        section("B.1.2.2").tables.append(denoiser_table(den))

    scores = {name: s for name in params.get("sampling", {})
              if (s := _read_json(metrics_dir / f"sample_{name}.json")) is not None}
    live = {name: reports / "train" / name for name in params.get("models", {})
            if (reports / "train" / name / "plots" / "metrics" / "train" / "loss.tsv").is_file()}
    ev = section("B.eval")
    if clf := _read_json(metrics_dir / "classifier.json"):
        ev.notes.append(f"The scoring classifier (conv32 → conv64 → fc128 → 10, trained in the pipeline on the first "
                        f"{params['classifier']['train_subset']:,} training digits) labels "
                        f"{clf['test_accuracy']:.2%} of the {clf['n_test']:,} MNIST test digits correctly.")
    if scores:
        ev.tables.append(sample_quality_table(scores, params))
        for table in (class_table(scores), per_class_table(scores)):
            if table:
                ev.tables.append(table)
    if sweep := _read_json(metrics_dir / "guidance.json"):
        ev.tables.append(guidance_table(sweep))
    if table := training_table(live):
        ev.tables.append(table)

    parts = []
    for letter, title in PARTS.items():
        secs = sorted((s for s in sections.values() if s.id.split(".")[0] == letter), key=lambda s: section_key(s.id))
        parts.append({"id": letter, "title": title, "sections": secs,
                      "missing": None if letter != "A" or part_a_run else
                      "Part A not run: reports/part_a/manifest.json does not exist yet (`dvc repro part_a`)."})
    return {"parts": parts, "loss_curves": loss_curves_png(live), "params": yaml.safe_dump(params, sort_keys=False),
            "gamma": params.get("gamma"), "seed": params.get("seed")}


def render(reports: str | Path, params: dict) -> str:
    """The report page as a string."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["anchor"] = anchor
    return env.get_template("report.html.j2").render(**build(reports, params))


def write(reports: str | Path, params: dict) -> Path:
    """Render reports/index.html."""
    path = Path(reports) / "index.html"
    write_atomically(path, render(reports, params))
    return path
