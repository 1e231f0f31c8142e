"""DVC stage classifier: train the MNIST CNN that scores samples, save it, and record its test accuracy."""
import time

from difflab.data.mnist import load_mnist
from difflab.evaluation.classifier import (
    ClassifierConfig,
    accuracy,
    predict,
    save_classifier,
    train_classifier,
)
from difflab.pipeline import paths
from difflab.pipeline.errors import run_stage
from difflab.pipeline.params import load
from difflab.pipeline.runtime import resolve_device, write_metrics

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
