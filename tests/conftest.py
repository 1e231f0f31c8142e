"""Shared test helpers: a fake MNIST written as IDX files, and a scratch copy of the repo for pipeline tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from difflab.data.mnist import write_idx

REPO = Path(__file__).resolve().parents[1]


def _digit(d: int, rng: np.random.Generator) -> np.ndarray:
    """A 28x28 uint8 image of digit d drawn with PIL's default font at a random offset and scale."""
    size = int(rng.integers(14, 20))
    font = ImageFont.load_default(size=size)
    img = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(img).text((int(rng.integers(6, 10)), int(rng.integers(1, 5))), str(d), fill=255, font=font)
    return np.asarray(img, dtype=np.uint8)


def write_fake_mnist(directory: str | os.PathLike, n_train: int = 300, n_test: int = 100, seed: int = 0) -> Path:
    """Write the four MNIST IDX files with font-rendered digits (labels cycle 0..9) into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.stack([_digit(int(d), rng) for d in labels])
        write_idx(directory / f"{split}-images-idx3-ubyte", images)
        write_idx(directory / f"{split}-labels-idx1-ubyte", labels)
    return directory


def repo_files() -> list[str]:
    """Files a fresh clone would have (tracked, plus new files not ignored, so uncommitted work is tested too)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True, env=user_env()).stdout.split("\n")
    return [f for f in out if f and (REPO / f).is_file()]


def scratch_repo(dest: Path, params: dict | None = None) -> Path:
    """Copy the repo's files into dest as a new git repo with tiny params and a fake MNIST source; one commit."""
    import yaml

    for f in repo_files():
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, dest / f)
    tiny = yaml.safe_load((REPO / "tests" / "tiny_params.yaml").read_text())
    tiny["data"]["source"] = str(write_fake_mnist(dest.parent / f"{dest.name}-mnist"))
    for key, value in (params or {}).items():
        tiny[key] = value
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "scratch"]):
        run(cmd, dest)
    return dest


# What this project's machines set and a user's machine does not, in one place. Every variable named PYTHON* changes
# what Python writes or where, or what it imports: PYTHONDONTWRITEBYTECODE (no __pycache__/ at all, so a test cannot
# see bytecode land in a stage's code deps), PYTHONPYCACHEPREFIX (bytecode outside the tree), PYTHONOPTIMIZE (other
# .pyc names), PYTHONUSERBASE / PYTHONNOUSERSITE (where pip --user writes, what is importable), PYTHONSAFEPATH (whether
# `python -m stages.x` imports the repo's own difflab), PYTHONHASHSEED (set iteration order), PYTHONUNBUFFERED,
# PYTHONIOENCODING, PYTHONWARNINGS. Tests that run DVC, a stage, `make` or any subprocess give it `user_env()`.
NOT_A_USERS = ("PYTHON",)  # prefixes of variables removed from every subprocess's environment


def user_env(extra: dict | None = None, base: dict | None = None) -> dict[str, str]:
    """The environment a user has: this one without the NOT_A_USERS variables, with this interpreter's bin dir first
    on PATH (so `python` and `dvc` are the venv's), a git identity and DVC's analytics off; `extra` adds variables."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith(NOT_A_USERS)}
    env.update({"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"})
    env.update(extra or {})
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command in a user's environment (`user_env`); `env` adds variables."""
    res = subprocess.run(cmd, cwd=cwd, env=user_env(env), capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res
