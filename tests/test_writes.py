"""Writes that cannot half-happen: every file the library writes goes through `write_atomically` (temp file, fsync,
rename), so a write that fails part-way (full disk, crash) leaves the previous file whole. The check reads the code
with `ast`, and shows on planted snippets that it can fail."""
from __future__ import annotations

import ast
import errno
import os
from pathlib import Path

import pytest

from difflab.pipeline import errors
from difflab.pipeline.errors import OutputWriteError, write_atomically
from difflab.training import loop

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
WRITER = ("difflab/pipeline/errors.py", "write_atomically")


def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_the_writer_fsyncs_the_new_bytes_before_it_renames(tmp_path, monkeypatch):
    calls = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", str(a))), replace(a, b)))
    target = tmp_path / "metrics.json"
    write_atomically(target, "new\n")
    assert target.read_text() == "new\n"
    assert calls[0] == ("fsync", str(tmp_path / "metrics.json.tmp")), calls
    assert calls[1] == ("replace", str(tmp_path / "metrics.json.tmp")), calls


@pytest.mark.parametrize("fail", ["fsync", "replace"])
def test_a_write_that_fails_part_way_keeps_the_previous_file(tmp_path, monkeypatch, fail):
    target = tmp_path / "samples.safetensors"
    target.write_bytes(b"previous")
    monkeypatch.setattr(os, fail, _full_disk)
    with pytest.raises(OutputWriteError, match=f"could not write {target}.*previous samples.safetensors is unchanged"):
        write_atomically(target, b"x" * 100_000)
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.safetensors"], "the partial temp file is removed"


def test_a_failed_truncation_of_the_training_log_keeps_the_loss_curve(tmp_path, monkeypatch):
    """DVCLive logs are persisted, not cached: a resume that cut them short in place would lose the curve for good."""
    tsv = tmp_path / "plots" / "metrics" / "train" / "loss.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("step\tloss\n" + "".join(f"{s}\t{1 / (s + 1)}\n" for s in range(100)))
    before = tsv.read_bytes()
    monkeypatch.setattr(os, "fsync", _full_disk)
    with pytest.raises(OutputWriteError):
        loop._truncate_live(tmp_path, 40)
    assert tsv.read_bytes() == before
    monkeypatch.undo()
    loop._truncate_live(tmp_path, 40)
    assert tsv.read_text().splitlines()[-1].startswith("39\t")


# ---------------------------------------------------------------- nothing writes a file any other way

WRITE_METHODS = {"write_text", "write_bytes", "save_file", "savefig", "save", "imwrite", "mimsave", "to_csv"}


def direct_writes(source: str, name: str = "<snippet>") -> list[str]:
    """Calls that write a file other than through write_atomically: Path.write_text / write_bytes, open() for
    writing, and savefig / save / save_file / ... whose first argument is not an in-memory buffer (io.BytesIO or
    io.StringIO assigned in the same module)."""
    tree = ast.parse(source)
    buffers = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
               and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute)
               and node.value.func.attr in ("BytesIO", "StringIO") for t in node.targets if isinstance(t, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"),
                                                                 None)
            if isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+"):
                found.append(f"{name}:{node.lineno} open(..., {mode.value!r})")
        elif isinstance(func, ast.Name) and func.id in ("save_file", "imwrite", "mimsave"):
            found.append(f"{name}:{node.lineno} {func.id}()")
        elif isinstance(func, ast.Attribute) and func.attr in WRITE_METHODS:
            if func.attr in ("write_text", "write_bytes", "save_file"):
                found.append(f"{name}:{node.lineno} .{func.attr}()")
                continue
            target = node.args[1] if (func.attr == "save" and isinstance(func.value, ast.Name)
                                      and func.value.id == "torch" and len(node.args) > 1) else \
                (node.args[0] if node.args else None)
            if not (isinstance(target, ast.Name) and target.id in buffers):
                found.append(f"{name}:{node.lineno} .{func.attr}() to a path")
    return found


def test_the_library_writes_files_only_through_the_atomic_writer():
    problems = []
    for path in sorted([*(REPO / "difflab").rglob("*.py"), *(REPO / "stages").glob("*.py")]):
        rel = str(path.relative_to(REPO))
        found = direct_writes(path.read_text(), rel)
        if rel == WRITER[0]:  # the writer itself opens its temp file
            found = [f for f in found if "open(" not in f]
        problems += found
    assert not problems, "write through difflab.pipeline.errors.write_atomically:\n" + "\n".join(problems)


@pytest.mark.parametrize("snippet", [
    "Path('m.json').write_text('x')",
    "p.write_bytes(b'x')",
    "open(path, 'w').write('x')",
    "open(path, mode='ab')",
    "fig.savefig(path, dpi=100)",
    "torch.save(state, path)",
    "save_file(tensors, str(out))",
    "img.save(path, format='GIF')",
])
def test_the_check_flags_direct_writes(snippet):
    assert direct_writes(snippet)


@pytest.mark.parametrize("snippet", [
    "buffer = io.BytesIO()\nfig.savefig(buffer, format='png')",
    "buffer = io.BytesIO()\ntorch.save(state, buffer)",
    "table = io.StringIO()\nopen(path).read()",
    "open(path, 'rb').read()",
])
def test_the_check_passes_writes_to_memory_and_reads(snippet):
    assert direct_writes(snippet) == []


def test_the_writer_is_where_the_check_says():
    assert hasattr(errors, WRITER[1])
