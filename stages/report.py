"""DVC stage report: render reports/index.html from the stages' manifests, metrics and DVCLive logs."""

from difflab.pipeline import paths
from difflab.pipeline.errors import run_stage
from difflab.pipeline.params import load
from difflab.report import html as report


def main() -> None:
    print(f"[report] wrote {report.write(paths.REPORTS, load())}")


if __name__ == "__main__":
    run_stage("report", main)
