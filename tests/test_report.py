"""The HTML report: rendered from a tiny fake reports tree, then opened in headless Chromium, where every image
must decode and no script error may occur."""
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from difflab.figures import manifest
from difflab.report import html as report

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PROBE = """<script>
window.__errors = [];
window.onerror = function (msg) { window.__errors.push(String(msg)); };
window.addEventListener("error", function (e) {
  if (e.target && e.target.tagName) window.__errors.push("failed to load " + (e.target.src || e.target.href));
}, true);
window.addEventListener("load", function () {
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({
    images: Array.from(document.images).map(function (i) {
      return [i.getAttribute("src").slice(0, 60), i.naturalWidth];
    }),
    errors: window.__errors});
  document.body.appendChild(out);
});
</script>"""


def png(path: Path, seed: int, size=(120, 80)) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8)).save(path)


def gif(path: Path) -> None:
    frames = [Image.fromarray(np.full((40, 40), v, dtype=np.uint8)) for v in (0, 128, 255)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=80, loop=0)


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def fake_reports(root: Path, part_a: bool) -> tuple[Path, dict]:
    """A reports tree shaped like the pipeline's: manifests, figures, metrics JSON and DVCLive TSVs."""
    reports = root / "reports"
    png(reports / "denoiser" / "ood.png", 0)
    manifest.write(reports / "denoiser", [manifest.Figure("ood.png", "OOD", "Denoised at several σ.", "B.1.2.2")])
    samples = reports / "samples" / "class_ddpm"
    png(samples / "epoch_01.png", 1), png(samples / "fid_samples.png", 2), gif(samples / "process.gif")
    manifest.write(samples, [manifest.Figure("epoch_01.png", "Epoch 1", "Samples & <digits>.", "B.2.6"),
                             manifest.Figure("process.gif", "Process", "Noise to digits.", "B.2.6"),
                             manifest.Figure("fid_samples.png", "Scored", "Scored samples.", "B.eval")])
    png(reports / "guidance" / "sweep.png", 3)
    manifest.write(reports / "guidance", [manifest.Figure("sweep.png", "Sweep", "γ sweep.", "B.eval")])
    m = reports / "metrics"
    write_json(m / "denoiser.json", {"denoiser": {"sigma_0.0": {"mse": 0.001, "psnr": 30.1},
                                                  "sigma_0.5": {"mse": 0.01, "psnr": 20.2}}})
    write_json(m / "classifier.json", {"test_accuracy": 0.9918, "n_test": 10000})
    write_json(m / "sample_class_ddpm.json", {"fid": 3.2, "fid_baseline": 0.4, "n": 100, "accuracy": 0.9,
                                              "per_class": {str(d): 0.9 for d in range(10)}})
    write_json(m / "guidance.json", {"fid_baseline": 0.4, "n": 100,
                                     "class_ddpm": {"gamma_1": {"accuracy": 0.5, "fid": 4.0},
                                                    "gamma_7": {"accuracy": 0.95, "fid": 5.0}}})
    live = reports / "train" / "class_ddpm" / "plots" / "metrics"
    (live / "train").mkdir(parents=True), (live / "epoch").mkdir(parents=True)
    (live / "train" / "loss.tsv").write_text("step\tloss\n" + "".join(f"{i}\t{1 / (i + 1)}\n" for i in range(60)))
    (live / "epoch" / "loss.tsv").write_text("step\tloss\n29\t0.1\n59\t0.05\n")
    if part_a:
        png(reports / "part_a" / "1_1_forward.png", 4)
        png(reports / "part_a" / "0_samples.png", 5)
        manifest.write(reports / "part_a", [manifest.Figure("1_1_forward.png", "Forward", "x_t.", "A.1.1"),
                                            manifest.Figure("0_samples.png", "Samples", "Prompts.", "A.0")])
        write_json(m / "part_a.json", {"stride": 30, "one_step": {"psnr": 18.5}})
    params = yaml.safe_load((REPO / "tests" / "tiny_params.yaml").read_text())
    return reports, params


def test_sample_quality_table_shows_legibility_beside_the_real_digit_ceiling():
    params = yaml.safe_load((REPO / "tests" / "tiny_params.yaml").read_text())
    scores = {"time_fm": {"fid": 9.0, "fid_baseline": 1.0, "n": 100, "legibility": 0.42, "legibility_real": 0.97},
              "class_fm": {"fid": 3.0, "fid_baseline": 1.0, "n": 100, "accuracy": 0.9}}
    table = report.sample_quality_table(scores, params)
    assert "<th>legibility</th>" in table.html and "<th>real-digit legibility</th>" in table.html
    row = table.html[table.html.index("<td>time_fm</td>"):table.html.index("<td>class_fm</td>")]
    assert "<td>0.420</td>" in row and "<td>0.970</td>" in row
    assert "probability ≥ 0.9" in table.caption


def test_numbers_print_with_the_half_width_of_their_interval():
    s = {"fid": 103.13, "fid_lo": 95.0, "fid_hi": 115.0, "accuracy": 0.98, "accuracy_lo": 0.966, "accuracy_hi": 0.99,
         "legibility": 0.5}
    assert report.plus_minus(s, "fid", "{:.1f}") == "103.1 ± 10.0"
    assert report.plus_minus(s, "accuracy") == "0.980 ± 0.012"
    assert report.plus_minus(s, "legibility") == "0.500"  # metrics written before intervals existed
    assert report.plus_minus(s, "cas") is None


def test_tables_show_precision_recall_cas_and_guidance_with_their_spread():
    params = yaml.safe_load((REPO / "tests" / "tiny_params.yaml").read_text())
    spread = {"n": 100, "fid": 9.0, "fid_lo": 8.0, "fid_hi": 11.0, "fid_baseline": 1.0, "fid_baseline_lo": 0.9,
              "fid_baseline_hi": 1.3, "precision": 0.8, "precision_lo": 0.7, "precision_hi": 0.9, "recall": 0.2,
              "recall_lo": 0.1, "recall_hi": 0.3}
    scores = {"class_fm": {**spread, "accuracy": 0.9, "accuracy_lo": 0.84, "accuracy_hi": 0.96, "cas": 0.1,
                           "cas_lo": 0.09, "cas_hi": 0.11, "cas_real": 0.9, "cas_real_lo": 0.89, "cas_real_hi": 0.91}}
    quality = report.sample_quality_table(scores, params).html
    assert "<td>9.0 ± 1.5</td>" in quality and "<td>0.800 ± 0.100</td>" in quality and "<th>recall</th>" in quality
    classes = report.class_table(scores)
    assert "<td>0.100 ± 0.010</td>" in classes.html and "<td>0.900 ± 0.010</td>" in classes.html
    assert report.class_table({"time_fm": spread}) is None
    sweep = report.guidance_table({"n": 100, "fid_baseline": 1.0, "fid_baseline_lo": 0.9, "fid_baseline_hi": 1.3,
                                   "cas_real": 0.9, "cas_real_lo": 0.89, "cas_real_hi": 0.91,
                                   "class_fm": {"gamma_1": scores["class_fm"], "gamma_7": scores["class_fm"]}})
    assert "<th>class_fm CAS</th>" in sweep.html and "<td>0.100 ± 0.010</td>" in sweep.html
    assert "Fréchet distance 1.0 ± 0.2, CAS 0.900 ± 0.010" in sweep.caption


def test_sections_follow_the_course_order():
    ids = ["B.eval", "B.2.6", "A.1.10", "A.1.9", "B.1.2.1", "A.0", "A.1.7.3", "B.1.2"]
    assert sorted(ids, key=report.section_key) == ["A.0", "A.1.7.3", "A.1.9", "A.1.10", "B.1.2", "B.1.2.1",
                                                   "B.2.6", "B.eval"]


def test_without_part_a_the_page_says_so_and_keeps_part_b(tmp_path):
    reports, params = fake_reports(tmp_path, part_a=False)
    page = report.render(reports, params)
    assert "Part A not run" in page
    assert 'src="samples/class_ddpm/process.gif"' in page and "Samples &amp; &lt;digits&gt;." in page
    for text in ("99.18%", "Sample quality", "Intended-class accuracy per digit", "Guidance sweep", "Training runs",
                 "Denoiser on the test digits", "data:image/png;base64,"):
        assert text in page, text
    order = [page.index(f'<span class="sid">{s}</span>') for s in ("B.1.2.2", "B.2.6", "B.eval")]
    assert order == sorted(order)


def test_with_part_a_its_figures_come_first_in_course_order(tmp_path):
    reports, params = fake_reports(tmp_path, part_a=True)
    page = report.render(reports, params)
    assert "Part A not run" not in page
    assert page.index('src="part_a/0_samples.png"') < page.index('src="part_a/1_1_forward.png"') \
        < page.index('src="denoiser/ood.png"')
    assert "one_step.psnr" in page


def test_every_link_is_relative(tmp_path):
    reports, params = fake_reports(tmp_path, part_a=True)
    page = report.render(reports, params)
    for src in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert src.startswith(("data:image/png;base64,", "#")) or not re.match(r"^(/|[a-z]+:)", src), src


def test_page_renders_in_headless_chromium(tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed; CI must install it (.ci/run does)")
        pytest.skip("chromium is not installed")
    reports, params = fake_reports(tmp_path, part_a=True)
    page = report.write(reports, params)
    probe = reports / "probe.html"
    probe.write_text(page.read_text().replace("<head>", "<head>\n" + PROBE, 1))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--allow-file-access-from-files",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run(flags + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run; chromium printed:\n{dom[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    assert result["errors"] == []
    assert len(result["images"]) >= 8
    assert all(width > 0 for _, width in result["images"]), result["images"]

    shot = tmp_path / "report.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,3000", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(shot) as im:
        assert im.size == (1200, 3000) and len(np.unique(np.asarray(im.convert("L")))) > 10


def test_training_captions_name_the_digits_and_the_schedule_actually_used():
    entry = {"hidden": 32, "epochs": 1, "batch_size": 16, "lr": 0.01, "lr_decay": True, "grad_clip": 0,
             "train_subset": 20000}
    one_epoch = manifest.describe_training(entry)
    assert "1 epoch of the first 20,000 training digits" in one_epoch
    assert "(constant)" in one_epoch  # ExponentialLR steps only after an epoch: one epoch never decays
    own_subset = manifest.describe_training({**entry, "epochs": 5, "train_subset": 5000, "grad_clip": 1.0})
    assert "5 epochs of the first 5,000 training digits" in own_subset
    assert "x 0.1^(1/5) after each epoch" in own_subset and "grad-norm clip 1.0" in own_subset
    assert "training digits" not in manifest.describe_training({**entry, "epochs": 3, "train_subset": 0})
