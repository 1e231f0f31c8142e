"""The project's own errors, and the one way every stage reports them: one line on stderr, prefixed by the stage
name, naming the file or key and the fix, and exit status 1. Any other exception is a bug and keeps its
traceback; `DIFFLAB_DEBUG=1` shows the traceback for the project's errors too. Outputs are written atomically,
so a failed write leaves the previous file as it was; weight files are read with the same one-line errors."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable


class DifflabError(Exception):
    """An error a user can act on: its message names the input (file or params key) and the fix."""

    def __str__(self) -> str:
        # one message argument prints as is (a KeyError subclass would otherwise print it in quotes)
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class MissingFileError(DifflabError, FileNotFoundError):
    """An input another stage makes is absent (a model, a snapshot, a log, the prompt table); the message names
    the `dvc` command that restores or rebuilds it."""


class CorruptFileError(DifflabError, ValueError):
    """A file exists but is not what it should be (truncated, or another format); the message names the fix."""


class OutputWriteError(DifflabError, OSError):
    """An output could not be written (disk full, read-only directory); the previous file is left as it was."""


def write_atomically(path: str | Path, data: bytes | str) -> None:
    """Write data (str as UTF-8) to a temp file beside path, flush it to disk (fsync), then rename it over path; the
    only way the project writes a file. If the write fails part-way (disk full, read-only directory, a crash) the
    previous `path` is left as it was, the partial temp file is removed where possible, and OutputWriteError names
    the file and the fix. fsync before the rename is what makes the rename safe: without it a power loss can leave
    the new name pointing at an empty file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(path.parent)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OutputWriteError(f"could not write {path} ({err.strerror or err}); the previous {path.name} is "
                               f"unchanged; free disk space or make {path.parent} writable, then run again") from err


def _fsync_directory(directory: Path) -> None:
    """Persist a rename (POSIX: fsync the directory); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def one_line(err: BaseException) -> str:
    """The error's message with its lines joined, so a stage's failure is a single line of stderr."""
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())


def run_stage(name: str, main: Callable[..., Any], *args: Any) -> None:
    """Run a stage's main(*args); a DifflabError becomes `<name>: <message>` on stderr and exit status 1."""
    try:
        main(*args)
    except DifflabError as err:
        if os.environ.get("DIFFLAB_DEBUG", "0") not in ("", "0"):
            raise
        print(f"{name}: {one_line(err)}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def read_weights(path: str | Path, what: str = "model file", noun: str = "model",
                 rebuild: str = "`dvc repro`") -> tuple[dict, dict]:
    """(config, state dict) of a safetensors file written by this project; a missing or unreadable file raises one
    line naming `what`, the path and the fix (`dvc checkout`, or `rebuild`)."""
    from safetensors.torch import load_file

    config = read_config(path, what, noun, rebuild)
    with _readable(path, what, noun, rebuild):
        return config, load_file(str(path))


def read_config(path: str | Path, what: str = "model file", noun: str = "model", rebuild: str = "`dvc repro`",
                require: tuple[str, ...] = ()) -> dict:
    """The config (JSON metadata entry "config") of a safetensors file written by this project, read without its
    tensors; a missing file, or a config without the fields `require` names, raises one line as read_weights does.
    (Everything goes in that one entry: safetensors writes several metadata entries in a random order.)"""
    from safetensors import safe_open

    with _readable(path, what, noun, rebuild):
        with safe_open(str(path), "pt") as f:
            config = json.loads((f.metadata() or {})["config"])
        if missing := [field for field in require if field not in config]:
            raise KeyError(f"its config has no {', '.join(missing)}")
        return config


@contextlib.contextmanager
def _readable(path: str | Path, what: str, noun: str, rebuild: str):
    """Turn a missing or unreadable weights file into one line naming `what`, the path and the fix."""
    from safetensors import SafetensorError

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} {path} is missing; restore it with `dvc checkout {path}` (or `dvc pull`), "
                               f"or train it with {rebuild}")
    try:
        yield
    except (SafetensorError, KeyError, TypeError, ValueError, OSError) as err:
        raise CorruptFileError(f"{what} {path} is corrupt or not a difflab {noun} ({type(err).__name__}: "
                               f"{str(err)[:200]}); restore it with `dvc checkout {path}`, or retrain it with "
                               f"{rebuild}") from err
