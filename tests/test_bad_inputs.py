"""Bad inputs through the real stage entry points, as DVC runs them (`python -m stages.<x>`, cwd = a scratch repo).

Every case in CASES either works (status 0) or stops with status 1 and one last line on stderr, `<stage>: ...`,
that names the input and the fix, with no traceback. After every case the outputs are restored (`git checkout`,
then `dvc checkout` when any DVC output differs) and compared byte for byte with the ones made before it. The cases
marked `repro` (one or more per kind of input and of stage: train, sample, fetch_data, part_a, classifier) also go
through `dvc repro -s <stage>`, which deletes the stage's outputs before it runs, so `dvc checkout` must bring them
back. One tiny pipeline is built once for the module. Below the table: the mechanism itself (`run_stage`,
DIFFLAB_DEBUG), and a full disk or a read-only directory while training writes a checkpoint or a model.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import yaml
from conftest import REPO, run, scratch_repo, user_env
from PIL import Image

pytestmark = pytest.mark.unit

TARGETS = ["part_a", "sample@time_fm", "sample@class_ddpm", "guidance_sweep", "evaluate_denoiser", "classifier"]
TRACKED = ("data", "models", "reports", "checkpoints")
DELETE = object()


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in TRACKED for p in sorted((root / d).rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- mutations

def params(**changes: Any) -> Callable[[Path], None]:
    """Set (or DELETE) dotted keys in params.yaml; a key `a.b->c` renames b to c (a typo)."""
    def mutate(root: Path) -> None:
        p = yaml.safe_load((root / "params.yaml").read_text())
        for dotted, value in changes.items():
            *parents, leaf = dotted.replace("__", ".").split(".")
            node = p
            for k in parents:
                node = node[k]
            if "->" in leaf:
                old, new = leaf.split("->")
                node[new] = node.pop(old)
            elif value is DELETE:
                del node[leaf]
            else:
                node[leaf] = value
        (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return mutate


def rename(**changes: str) -> Callable[[Path], None]:
    return params(**{f"{k}->{v}": None for k, v in changes.items()})


def write(rel: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data() if callable(data) else data)
    return mutate


def truncate(rel: str, keep: float = 0.5) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        blob = (root / rel).read_bytes()
        (root / rel).write_bytes(blob[:int(len(blob) * keep)])
    return mutate


def remove(rel: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        path = root / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return mutate


def copy(src: str, dst: str) -> Callable[[Path], None]:
    return lambda root: shutil.copyfile(root / src, root / dst)


def full_disk(rel: str) -> Callable[[Path], None]:
    """The next write of `rel` fails with ENOSPC: its temp file is a symlink to /dev/full."""
    def mutate(root: Path) -> None:
        (root / f"{rel}.tmp").symlink_to("/dev/full")
    return mutate


def both(*mutations: Callable[[Path], None]) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        for m in mutations:
            m(root)
    return mutate


def bad_labels(rel: str) -> Callable[[Path], None]:
    """An IDX labels file whose first label is 12 (not a digit)."""
    def mutate(root: Path) -> None:
        blob = bytearray((root / rel).read_bytes())
        blob[8] = 12
        (root / rel).write_bytes(bytes(blob))
    return mutate


def local_source(corrupt: Callable[[Path], None]) -> Callable[[Path], None]:
    """data.source = a directory holding a copy of the MNIST IDX files, then `corrupt(that dir)`."""
    def mutate(root: Path) -> None:
        src = root / "bad_source"
        shutil.copytree(root / "data/mnist/MNIST/raw", src)
        corrupt(src)
        params(**{"data.source": str(src)})(root)
    return mutate


# ---------------------------------------------------------------- images

def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def digit_png(size: int = 28) -> bytes:
    x = np.zeros((size, size), np.uint8)
    x[size // 4: 3 * size // 4, size // 2 - 2: size // 2 + 2] = 255
    return png(Image.fromarray(x))


def png16() -> bytes:
    im = Image.fromarray(np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64)
    assert im.mode.startswith("I;16")
    return png(im)


def rgba() -> bytes:
    x = np.zeros((30, 40, 4), np.uint8)
    x[..., 0], x[5:25, 10:30, 3] = 200, 255
    return png(Image.fromarray(x, "RGBA"))


def palette() -> bytes:
    im = Image.new("P", (20, 20), 0)
    im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    im.paste(1, (5, 2, 15, 18))
    im.info["transparency"] = 0
    return png(im)


def bomb() -> bytes:
    """A valid PNG header claiming 100000 x 100000 pixels, with a tiny IDAT: decoding it would need 10 GB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_head() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()[:200]


def image(name: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
    return write(f"inputs/images/{name}", data)


def not_a_difflab_model() -> bytes:
    import torch
    from safetensors.torch import save
    return save({"weight": torch.zeros(3)})


# ---------------------------------------------------------------- the cases

@dataclass(frozen=True)
class Case:
    id: str
    stage: str                         # as DVC names it: `train@class_ddpm` runs `python -m stages.train class_ddpm`
    mutate: Callable[[Path], None]
    names: str = ""                    # the last stderr line names the input ...
    fix: str = ""                      # ... and the fix
    status: int = 1                    # 0: the stage accepts the input and works
    repro: bool = False                # also run `dvc repro -s <stage>` and restore its outputs with `dvc checkout`


IMG = "inputs/images"
RAW = "data/mnist/MNIST/raw"
CASES = [
    # params.yaml: typos, wrong types, ranges, shapes
    Case("params-typo-top-level", "sample@class_ddpm", rename(gamma="gamme"), "gamme", "did you mean `gamma`?"),
    Case("params-typo-nested", "train@class_ddpm", rename(**{"models.class_ddpm.epochs": "epoch"}),
         "models.class_ddpm.epoch", "did you mean `epochs`?", repro=True),
    Case("params-wrong-type", "sample@class_ddpm", params(gamma="high"), "gamma: got 'high'", "expected a",
         repro=True),
    Case("params-below-range", "guidance_sweep", params(**{"guidance_sweep.n": 3}), "guidance_sweep.n: got 3",
         "expected an int in [10"),
    Case("params-bad-choice", "classifier", params(precision="fp16"), "precision: got 'fp16'", "expected one of"),
    Case("params-bool-for-int", "train@denoiser", params(**{"models.denoiser.hidden": True}),
         "models.denoiser.hidden: got True", "expected an int"),
    Case("params-missing-key", "classifier", params(**{"classifier.lr": DELETE}), "classifier.lr", "missing; expected"),
    Case("params-invalid-yaml", "report", write("params.yaml", b"gamma: [1, 2\nseed: 0\n"), "params.yaml",
         "fix the syntax"),
    Case("params-beta-order", "sample@time_fm", params(**{"ddpm.beta1": 0.5, "ddpm.beta2": 0.1}), "ddpm.beta1",
         "must not exceed"),
    Case("params-empty-list", "guidance_sweep", params(**{"guidance_sweep.gammas": []}), "guidance_sweep.gammas",
         "list the CFG scales"),
    Case("params-unknown-model-arg", "train@nosuch", lambda root: None, "unknown model 'nosuch'",
         "params.yaml `models` has"),
    Case("params-test-index-past-data", "part_a", params(**{"part_a.mnist.test_indices": [5, 150]}),
         "part_a.mnist.test_indices", "use indices below 100"),
    Case("params-i-start-too-late", "part_a", params(**{"part_a.i_start": 500}), "part_a.i_start", "use an index from 0"),
    Case("params-unknown-view", "part_a",
         params(**{"part_a.mnist.prompts.anagrams": [["spin", "a handwritten 7", "a handwritten 1"]]}), "spin",
         "view one of"),
    Case("params-data-source-missing", "fetch_data", params(**{"data.source": "/nonexistent/mnist"}),
         "/nonexistent/mnist", "set data.source", repro=True),
    # prompts and backbones
    Case("prompt-unknown", "embed_prompts", params(**{"part_a.mnist.prompts.samples": ["a photo of a cat"]}),
         "'a photo of a cat'", "name a digit as"),
    Case("prompt-not-embedded", "part_a", params(**{"part_a.mnist.prompts.photo": "a handwritten 4"}),
         "'a handwritten 4'", "dvc repro embed_prompts"),
    Case("backbone-deepfloyd-without-gpu", "embed_prompts", params(**{"part_a.backbone": "deepfloyd"}),
         "part_a.backbone=deepfloyd needs a CUDA GPU", "keep part_a.backbone=mnist"),
    # images and masks in inputs/images (Part A edits every one of them)
    Case("image-empty", "part_a", image("empty.png", b""), f"{IMG}/empty.png is empty", "re-export", repro=True),
    Case("image-truncated-png", "part_a", image("cut.png", lambda: digit_png(64)[:60]), f"{IMG}/cut.png",
         "re-export it as PNG"),
    Case("image-truncated-jpeg", "part_a", image("cut.jpg", jpeg_head), f"{IMG}/cut.jpg", "re-export it as PNG"),
    Case("image-not-an-image", "part_a", image("notes.png", b"shopping list: milk, eggs\n"), f"{IMG}/notes.png",
         "save it as PNG or JPEG"),
    Case("image-decompression-bomb", "part_a", image("bomb.png", bomb), f"{IMG}/bomb.png is too large",
         "downscale it"),
    Case("mask-wrong-size", "part_a",
         both(image("digit.png", digit_png), image("digit.mask.png", lambda: digit_png(14))),
         f"{IMG}/digit.mask.png is 14x14", "resize the mask"),
    Case("mask-empty", "part_a", both(image("digit.png", digit_png), image("digit.mask.png", b"")),
         f"{IMG}/digit.mask.png is empty", "re-export"),
    Case("image-16-bit", "part_a", image("deep.png", png16), status=0),
    Case("image-rgba", "part_a", image("alpha.png", rgba), status=0),
    Case("image-palette", "part_a", image("palette.png", palette), status=0),
    Case("image-one-pixel", "part_a", image("dot.png", lambda: png(Image.new("L", (1, 1), 255))), status=0),
    # models, snapshots, logs and tables that other stages made
    Case("model-corrupt", "sample@class_ddpm", truncate("models/class_ddpm.safetensors", 0.3),
         "models/class_ddpm.safetensors is corrupt", "dvc checkout models/class_ddpm.safetensors", repro=True),
    Case("model-not-difflab", "guidance_sweep", write("models/class_fm.safetensors", not_a_difflab_model),
         "models/class_fm.safetensors is corrupt or not a difflab model", "dvc checkout models/class_fm.safetensors"),
    Case("model-wrong-kind", "part_a", copy("models/time_fm.safetensors", "models/class_ddpm.safetensors"),
         "models/class_ddpm.safetensors is a 'time_fm' model", "dvc checkout models/class_ddpm.safetensors"),
    Case("model-missing", "guidance_sweep", remove("models/class_fm.safetensors"),
         "models/class_fm.safetensors is missing", "dvc checkout models/class_fm.safetensors"),
    Case("snapshots-missing", "sample@time_fm", both(remove("models/snapshots/time_fm/epoch_01.safetensors"),
                                                     remove("models/snapshots/time_fm/epoch_02.safetensors")),
         "no snapshots in models/snapshots/time_fm", "dvc checkout models/snapshots/time_fm", repro=True),
    Case("snapshot-corrupt", "evaluate_denoiser", truncate("models/snapshots/denoiser/epoch_01.safetensors", 0.5),
         "models/snapshots/denoiser/epoch_01.safetensors is corrupt", "dvc checkout"),
    Case("classifier-corrupt", "guidance_sweep", write("models/classifier.safetensors", b"\0" * 64),
         "models/classifier.safetensors is corrupt", "dvc checkout models/classifier.safetensors"),
    Case("classifier-missing", "part_a", remove("models/classifier.safetensors"),
         "models/classifier.safetensors is missing", "dvc checkout models/classifier.safetensors"),
    Case("prompt-table-missing", "part_a", remove("data/prompt_embeds.pt"), "data/prompt_embeds.pt is missing",
         "dvc checkout data/prompt_embeds.pt"),
    Case("prompt-table-corrupt", "part_a", write("data/prompt_embeds.pt", b"PK\3\4 not a zip"),
         "data/prompt_embeds.pt is corrupt", "dvc checkout data/prompt_embeds.pt"),
    Case("training-log-missing", "sample@time_fm", remove("reports/train/time_fm/plots"),
         "no DVCLive log reports/train/time_fm", "git checkout -- reports/train/time_fm"),
    Case("manifest-corrupt", "report", write("reports/samples/time_fm/manifest.json", b"{"),
         "reports/samples/time_fm/manifest.json", "re-run the stage that wrote it"),
    Case("disk-full-model", "train@time_fm", full_disk("models/time_fm.safetensors"),
         "could not write models/time_fm.safetensors (No space left on device)", "free disk space"),
    Case("checkpoint-corrupt", "train@time_fm", write("checkpoints/time_fm/last.pt", b"half a checkpoint"), status=0),
    # MNIST IDX files
    Case("idx-truncated", "classifier", truncate(f"{RAW}/train-images-idx3-ubyte", 0.7),
         f"{RAW}/train-images-idx3-ubyte", "dvc checkout data/mnist", repro=True),
    Case("idx-mislabelled", "evaluate_denoiser", copy(f"{RAW}/t10k-images-idx3-ubyte", f"{RAW}/t10k-labels-idx1-ubyte"),
         "t10k-labels-idx1-ubyte: shape (100, 28, 28)", "dvc checkout data/mnist"),
    Case("idx-label-not-a-digit", "guidance_sweep", bad_labels(f"{RAW}/t10k-labels-idx1-ubyte"),
         "label 12 is outside 0..9", "dvc checkout data/mnist"),
    Case("idx-missing", "train@time_fm", remove("data/mnist"), "MNIST not found", "dvc repro fetch_data"),
    Case("source-idx-truncated", "fetch_data", local_source(truncate("train-labels-idx1-ubyte", 0.5)),
         "train-labels-idx1-ubyte", "set data.source"),
]


def test_the_corpus_covers_every_stage():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    assert {c.stage.split("@")[0] for c in CASES} == {p.stem for p in (REPO / "stages").glob("*.py")}


# ---------------------------------------------------------------- the pipeline and the runs

@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The tiny pipeline run once and committed (metrics and DVCLive logs are git outs); returns (root, digests)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.delenv("DIFFLAB_DEBUG", raising=False)
        root = scratch_repo(tmp_path_factory.mktemp("bad_inputs") / "repo")
        run(["dvc", "repro", *TARGETS], root)
        run(["git", "add", "-A"], root)
        run(["git", "commit", "-qm", "outputs"], root)
        yield root, digests(root)


def stage_command(stage: str) -> list[str]:
    """The stage's `cmd` from dvc.yaml, with a foreach stage's ${key} filled in."""
    name, _, item = stage.partition("@")
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]
    return (spec["do"]["cmd"].replace("${key}", item) if item else spec["cmd"]).split()


def restore(root: Path, outputs: dict[str, str] | None = None) -> None:
    """git restores params, inputs and the git-tracked outs; `dvc checkout` the DVC outs (skipped when a case left
    them byte-identical to `outputs`)."""
    run(["git", "checkout", "-q", "--", "."], root)
    run(["git", "clean", "-fdq", "--", "inputs", "bad_source"], root)
    if outputs is None or digests(root) != outputs:
        run(["dvc", "checkout", "--force", "--with-deps", *TARGETS], root)


@pytest.mark.e2e
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(pipeline, case: Case):
    root, before = pipeline
    case.mutate(root)
    try:
        res = run(stage_command(case.stage), root, check=False)
        assert "Traceback" not in res.stderr, res.stderr
        assert res.returncode == case.status, res.stdout[-2000:] + res.stderr[-2000:]
        if case.status:
            last = res.stderr.strip().splitlines()[-1]
            assert last.startswith(f"{case.stage}: "), last
            assert case.names in last and case.fix in last, last
        if case.repro:
            dvc = run(["dvc", "repro", "-s", case.stage], root, check=False)
            assert dvc.returncode != 0 and last in dvc.stderr + dvc.stdout, dvc.stdout + dvc.stderr
    finally:
        restore(root, None if case.repro else before)
    assert digests(root) == before
    if case.repro:
        assert run(["dvc", "status", "--json", "--with-deps", *TARGETS], root).stdout.strip() in ("{}", "")


# ---------------------------------------------------------------- the mechanism itself

def test_run_stage_one_line_for_project_errors_traceback_for_bugs(capsys, monkeypatch):
    from difflab.pipeline.errors import DifflabError, run_stage

    def fails(exc):
        raise exc

    monkeypatch.delenv("DIFFLAB_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        run_stage("sample@x", fails, DifflabError("models/x is corrupt:\n  details; run `dvc checkout`"))
    assert exit_.value.code == 1
    assert capsys.readouterr().err == "sample@x: models/x is corrupt: details; run `dvc checkout`\n"
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_stage("sample@x", fails, ZeroDivisionError("bug"))
    monkeypatch.setenv("DIFFLAB_DEBUG", "1")
    with pytest.raises(DifflabError):
        run_stage("sample@x", fails, DifflabError("shown with its traceback"))


@pytest.mark.e2e
def test_debug_env_shows_the_traceback(pipeline):
    root, _ = pipeline
    params(gamma="high")(root)
    try:
        res = run(stage_command("sample@class_ddpm"), root, check=False, env={"DIFFLAB_DEBUG": "1"})
    finally:
        restore(root)
    assert res.returncode == 1 and "Traceback" in res.stderr and "ParamsError" in res.stderr, res.stderr


# ---------------------------------------------------------------- failed writes keep the previous files

@pytest.fixture
def tiny_training(tmp_path, monkeypatch):
    """train(name, epochs) on 64 fake digits in tmp_path, with outputs where the pipeline puts them."""
    import torch

    from difflab.pipeline import paths
    from difflab.training.loop import TrainConfig, train

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    x, y = torch.rand(64, 1, 28, 28), torch.arange(64) % 10

    def go(epochs: int, name: str = "time_fm") -> dict:
        cfg = TrainConfig(kind="time_fm", hidden=4, batch_size=32, epochs=epochs, snapshots=[1], seed=0,
                          device="cpu", precision="fp32")
        return train(name, cfg, x, y, paths.train_outputs(name))
    return go, paths.train_outputs("time_fm")


needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full for a real ENOSPC")


@needs_dev_full
def test_full_disk_while_writing_the_model_keeps_the_previous_model(tiny_training):
    from difflab.pipeline.errors import OutputWriteError

    go, out = tiny_training
    go(epochs=1)
    previous = out.model.read_bytes()
    tmp = out.model.with_name(out.model.name + ".tmp")
    tmp.symlink_to("/dev/full")
    with pytest.raises(OutputWriteError, match="No space left on device.*previous time_fm.safetensors is unchanged"):
        go(epochs=2)  # a new run: trains, then fails writing the model
    assert out.model.read_bytes() == previous
    assert not tmp.exists() and not tmp.is_symlink()


@needs_dev_full
def test_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tiny_training, monkeypatch, capsys):
    import difflab.training.loop as train_module
    from difflab.pipeline.errors import OutputWriteError

    go, out = tiny_training
    last, original, calls = out.checkpoint / "last.pt", train_module._save_checkpoint, []

    def second_write_hits_a_full_disk(*args, **kwargs):
        calls.append(last.read_bytes() if last.exists() else None)
        if len(calls) == 2:
            (out.checkpoint / "last.pt.tmp").symlink_to("/dev/full")
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "_save_checkpoint", second_write_hits_a_full_disk)
    with pytest.raises(OutputWriteError, match="could not write checkpoints/time_fm/last.pt"):
        go(epochs=3)
    assert len(calls) == 2 and last.read_bytes() == calls[1]  # epoch 1's checkpoint, untouched
    assert not (out.checkpoint / "last.pt.tmp").is_symlink() and not out.model.exists()
    monkeypatch.setattr(train_module, "_save_checkpoint", original)
    capsys.readouterr()
    go(epochs=3)  # the kept checkpoint is usable: the run resumes from it
    assert "resuming after epoch 1" in capsys.readouterr().out
    assert out.model.is_file()


def make_read_only(directory: Path) -> Callable[[], None] | None:
    """Make `directory` refuse new files (chmod, or `chattr +i` when running as root); returns the undo, or None."""
    import subprocess

    directory.chmod(0o555)
    probe = directory / ".probe"
    try:
        probe.touch()
    except OSError:
        return lambda: directory.chmod(0o755)
    probe.unlink()
    directory.chmod(0o755)
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(directory)], capture_output=True, env=user_env()).returncode == 0:
        return lambda: subprocess.run(["chattr", "-i", str(directory)], check=True, env=user_env())
    return None


def test_read_only_model_directory_keeps_the_previous_model(tiny_training):
    from difflab.pipeline.errors import OutputWriteError

    go, out = tiny_training
    go(epochs=1)
    previous = out.model.read_bytes()
    undo = make_read_only(out.model.parent)
    if undo is None:
        pytest.skip("cannot make a directory read-only here (root without chattr)")
    try:
        with pytest.raises(OutputWriteError, match=f"could not write {out.model}.*make models writable"):
            go(epochs=2)
    finally:
        undo()
    assert out.model.read_bytes() == previous
    assert sorted(p.name for p in out.model.parent.iterdir()) == ["snapshots", "time_fm.safetensors"]
