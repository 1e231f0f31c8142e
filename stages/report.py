"""DVC stage report: render reports/index.html from the stages' manifests, metrics and DVCLive logs."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from difflab import paths, report  # noqa: E402
from difflab.errors import run_stage  # noqa: E402
from difflab.params import load  # noqa: E402


def main() -> None:
    print(f"[report] wrote {report.write(paths.REPORTS, load())}")


if __name__ == "__main__":
    run_stage("report", main)
