"""DVC stage fetch_data: MNIST into data/mnist (torchvision layout) from params `data.source`."""
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from difflab.data import fetch_mnist, load_mnist  # noqa: E402
from difflab.errors import run_stage  # noqa: E402
from difflab.params import load  # noqa: E402

ROOT = "data/mnist"


def main() -> None:
    """Fetch MNIST from the configured source and print a one-line summary."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    data = load()["data"]
    source = data["source"]
    start = time.perf_counter()
    fetch_mnist(ROOT, source=str(source), expected_counts="any" if data["expect"] == "any" else None)
    n_train, n_test = (len(load_mnist(ROOT, train=t)[1]) for t in (True, False))
    print(f"fetch_data: MNIST {n_train} train / {n_test} test images in {ROOT} "
          f"(source {source}, {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    run_stage("fetch_data", main)
