"""`make smoke`: the whole pipeline on tiny params (tests/tiny_params.yaml) in a temporary clone."""
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import run, scratch_repo  # noqa: E402


def main() -> None:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="difflab-smoke-") as tmp:
        root = scratch_repo(Path(tmp) / "repo")
        out = run(["dvc", "repro"], root).stdout
        stages = out.count("Running stage")
        report = root / "reports" / "index.html"
        print(f"smoke: {stages} stages ran in {time.perf_counter() - start:.0f} s"
              + (f"; report {report.stat().st_size} bytes" if report.exists() else ""))


if __name__ == "__main__":
    main()
