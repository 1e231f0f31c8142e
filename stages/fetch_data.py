"""DVC stage fetch_data: MNIST into data/mnist (torchvision layout) from params `data.source`."""
import logging
import time

from difflab.data.mnist import fetch_mnist, load_mnist
from difflab.pipeline.errors import run_stage
from difflab.pipeline.params import load

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
