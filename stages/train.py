"""DVC stage train@<name>: train one Part B model from params.yaml `models.<name>`."""
import signal
import sys

from difflab.core.schedule import NoiseSchedule
from difflab.data.mnist import load_mnist
from difflab.pipeline import paths
from difflab.pipeline.errors import run_stage
from difflab.pipeline.params import ParamsError, load
from difflab.training.loop import TrainConfig, train


def main(name: str) -> None:
    # DVC starts stages with SIGINT ignored; restore Ctrl-C so an interrupted run stops at once and resumes later.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    params = load()
    if name not in params["models"]:
        raise ParamsError(f"unknown model {name!r}; params.yaml `models` has: {', '.join(params['models'])}")
    settings = dict(params["models"][name])
    subset = settings.pop("train_subset")
    settings.pop("schedule")  # declared for DVC; the kind decides (validated to agree)
    cfg = TrainConfig(**settings, seed=params["seed"], device=params["device"], precision=params["precision"])
    x, y = load_mnist(paths.MNIST, train=True)
    if subset:
        x, y = x[:subset], y[:subset]
    summary = train(name, cfg, x, y, paths.train_outputs(name), NoiseSchedule.for_model(params, name))
    print(f"[{name}] done: {summary}")


if __name__ == "__main__":
    run_stage(f"train@{sys.argv[1]}", main, sys.argv[1])
