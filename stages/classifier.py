"""DVC stage classifier: train the MNIST CNN that scores samples, save it, and record its test accuracy."""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from difflab import paths  # noqa: E402
from difflab.classifier import ClassifierConfig, predict, save_classifier, train_classifier  # noqa: E402
from difflab.data import load_mnist  # noqa: E402
from difflab.errors import run_stage  # noqa: E402
from difflab.metrics import accuracy  # noqa: E402
from difflab.params import load  # noqa: E402
from difflab.runtime import resolve_device, write_metrics  # noqa: E402

METRICS = paths.REPORTS / "metrics" / "classifier.json"


def main() -> None:
    params = load()
    c = params["classifier"]
    cfg = ClassifierConfig(epochs=c["epochs"], batch_size=c["batch_size"], lr=c["lr"], max_shift=c["max_shift"],
                           seed=params["seed"], device=params["device"], precision=params["precision"])
    x, y = load_mnist(paths.MNIST, train=True)
    if c["train_subset"]:
        x, y = x[:c["train_subset"]], y[:c["train_subset"]]
    start = time.perf_counter()
    model = train_classifier(x, y, cfg)
    seconds = time.perf_counter() - start
    save_classifier(paths.CLASSIFIER, model)
    x_test, y_test = load_mnist(paths.MNIST, train=False)
    metrics = {"test_accuracy": round(accuracy(predict(model, x_test), y_test), 4), "n_test": len(y_test)}
    write_metrics(METRICS, metrics, resolve_device(cfg.device), cfg.precision)
    print(f"[classifier] {len(x)} images, {cfg.epochs} epochs in {seconds:.0f} s: {metrics}")


if __name__ == "__main__":
    run_stage("classifier", main)
