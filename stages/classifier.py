"""DVC stage classifier: train the MNIST CNN that scores samples, save it, and record its test accuracy."""
import time

from difflab.data.mnist import load_split
from difflab.evaluation.classifier import (
    ClassifierConfig,
    accuracy,
    predict,
    save_classifier,
    train_classifier,
)
from difflab.pipeline import paths, splits
from difflab.pipeline.errors import run_stage
from difflab.pipeline.params import ParamsError, load
from difflab.pipeline.runtime import resolve_device, write_metrics

METRICS = paths.REPORTS / "metrics" / "classifier.json"


def main() -> None:
    params = load()
    c = params["classifier"]
    cfg = ClassifierConfig(epochs=c["epochs"], batch_size=c["batch_size"], lr=c["lr"], max_shift=c["max_shift"],
                           seed=params["seed"], device=params["device"], precision=params["precision"])
    x, y = load_split(paths.MNIST, splits.TRAIN)
    if c["train_subset"] > len(x):  # only a training set smaller than MNIST's (difflab.pipeline.splits)
        raise ParamsError(f"classifier.train_subset: got {c['train_subset']}; this MNIST has {len(x)} training "
                          "digits before its held-out ones, so use at most that many")
    x, y = x[:c["train_subset"]], y[:c["train_subset"]]
    start = time.perf_counter()
    model = train_classifier(x, y, cfg)
    seconds = time.perf_counter() - start
    save_classifier(paths.CLASSIFIER, model)
    x_test, y_test = load_split(paths.MNIST, splits.TEST)
    metrics = {"test_accuracy": round(accuracy(predict(model, x_test), y_test), 4), "n_test": len(y_test)}
    write_metrics(METRICS, metrics, resolve_device(cfg.device), cfg.precision)
    print(f"[classifier] {len(x)} images, {cfg.epochs} epochs in {seconds:.0f} s: {metrics}")


if __name__ == "__main__":
    run_stage("classifier", main)
