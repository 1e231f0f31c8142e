"""The training loop: learns, is byte-reproducible, resumes exactly, runs nothing a checkpoint file carries, and
refuses to write a diverged model."""
import contextlib
import hashlib
import pickle

import pytest
import torch

from difflab.core import families
from difflab.core.schedule import NoiseSchedule
from difflab.core.weights import list_snapshots, load_model, read_snapshot
from difflab.figures.training_log import read_curve
from difflab.pipeline.paths import Outputs
from difflab.training.loop import IN_EPOCH_SNAPSHOTS, TrainConfig, TrainingDiverged, in_epoch_steps, train

pytestmark = pytest.mark.unit


def tiny_data(n=64):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 10
    x = torch.zeros(n, 1, 28, 28)
    for i in range(n):  # a bright bar whose row encodes the class: learnable in a few steps
        x[i, 0, 2 + 2 * y[i], 4:24] = 1.0
    return (x + 0.05 * torch.rand(x.shape, generator=g)).clamp(0, 1), y


def outputs(tmp_path, tag="run"):
    base = tmp_path / tag
    return Outputs(base / "model.safetensors", base / "snapshots", base / "live", base / "ckpt")


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(directory):
    """File name -> sha256 of every file in a directory."""
    return {p.name: sha(p) for p in sorted(directory.iterdir())}


def cfg(**kw):
    base = dict(kind="class_ddpm", hidden=4, batch_size=16, epochs=3, lr=1e-2, lr_decay=True, snapshots=[1, 3],
                device="cpu")
    return TrainConfig(**{**base, **kw})


def test_denoiser_learns(tmp_path):
    x, y = tiny_data()
    out = outputs(tmp_path)
    train("denoiser", cfg(kind="denoiser", epochs=6, lr=3e-2, lr_decay=False, snapshots=[]), x, y, out)
    steps, losses = read_curve(out.live)
    assert steps == list(range(len(steps))) and len(steps) == 6 * 4
    assert sum(losses[-4:]) < 0.5 * sum(losses[:4])
    model, kind = load_model(out.model)
    assert kind == "denoiser" and model.hidden == 4
    assert [p.name for p in out.snapshots.iterdir()] == ["epoch_06.safetensors"]  # no in-epoch steps: not generative


def test_in_epoch_snapshot_steps_are_evenly_spaced_inside_the_first_epoch():
    assert IN_EPOCH_SNAPSHOTS == 3
    assert in_epoch_steps(1250) == [312, 625, 937]  # time_fm's defaults: 20,000 digits at batch 16
    assert in_epoch_steps(313) == [78, 156, 234]
    assert in_epoch_steps(4) == [1, 2, 3]
    assert in_epoch_steps(2) == [1] and in_epoch_steps(1) == []  # never the epoch's start or end
    assert in_epoch_steps(100, count=1) == [50]


def test_snapshots_record_the_step_whose_weights_they_hold(tmp_path):
    """A generative model keeps epoch snapshots and three in epoch 1; each records the optimizer steps done (DVCLive's
    step) and the epoch, and holds exactly the weights after that many steps."""
    x, y = tiny_data()
    out = outputs(tmp_path)
    seen = {}
    train("m", cfg(), x, y, out, NoiseSchedule.linear(20),
          on_step=lambda step, model: seen.__setitem__(step, {k: v.clone() for k, v in model.state_dict().items()}))
    snaps = list_snapshots(out.snapshots)
    assert [(s.path.name, s.step, s.epoch, s.whole_epoch) for s in snaps] == [
        ("step_000001.safetensors", 1, 0.25, None), ("step_000002.safetensors", 2, 0.5, None),
        ("step_000003.safetensors", 3, 0.75, None), ("epoch_01.safetensors", 4, 1.0, 1),
        ("epoch_03.safetensors", 12, 3.0, 3)]
    for snap in snaps:
        model, _ = load_model(snap.path)
        held = model.state_dict()
        assert all(torch.equal(held[k], v.float()) for k, v in seen[snap.step].items()), snap.path.name
    assert read_snapshot(snaps[-1].path).step == len(read_curve(out.live)[0])  # after the last logged step


def test_same_seed_same_bytes_different_seed_different_bytes(tmp_path):
    x, y = tiny_data()
    s = NoiseSchedule.linear(20)
    a, b, c = outputs(tmp_path, "a"), outputs(tmp_path, "b"), outputs(tmp_path, "c")
    train("m", cfg(), x, y, a, s)
    train("m", cfg(), x, y, b, s)
    train("m", cfg(seed=1), x, y, c, s)
    assert sha(a.model) == sha(b.model) != sha(c.model)
    assert tree(a.snapshots) == tree(b.snapshots) != tree(c.snapshots)
    assert sorted(tree(a.snapshots)) == ["epoch_01.safetensors", "epoch_03.safetensors", "step_000001.safetensors",
                                         "step_000002.safetensors", "step_000003.safetensors"]
    assert (a.checkpoint / "complete.json").is_file() and not (a.checkpoint / "last.pt").exists()


@pytest.mark.parametrize("dies_at", [2 * 4 + 2, 3])
def test_interrupted_run_resumes_to_identical_bytes(tmp_path, monkeypatch, dies_at):
    """Killed mid-way through epoch 3 (resumes from epoch 2's checkpoint) or inside epoch 1 after two in-epoch
    snapshots (no checkpoint yet: starts afresh), the run ends with an uninterrupted run's model, snapshots and logs."""
    x, y = tiny_data()
    ref = outputs(tmp_path, "ref")
    train("m", cfg(kind="class_fm"), x, y, ref)
    run = outputs(tmp_path, "run")
    real_loss, calls = families.Family.loss, {"n": 0}

    def dies(*args, **kw):
        calls["n"] += 1
        if calls["n"] == dies_at:  # 4 batches per epoch
            raise KeyboardInterrupt
        return real_loss(*args, **kw)

    monkeypatch.setattr(families.Family, "loss", dies)
    with pytest.raises(KeyboardInterrupt):
        train("m", cfg(kind="class_fm"), x, y, run)
    assert (run.checkpoint / "last.pt").is_file() == (dies_at > 4) and not run.model.exists()
    assert (run.snapshots / "step_000002.safetensors").is_file()
    monkeypatch.setattr(families.Family, "loss", real_loss)
    train("m", cfg(kind="class_fm"), x, y, run)
    assert sha(run.model) == sha(ref.model)
    assert tree(run.snapshots) == tree(ref.snapshots) and len(tree(ref.snapshots)) == 5
    assert read_curve(run.live) == read_curve(ref.live)
    assert read_curve(run.live, "epoch/loss") == read_curve(ref.live, "epoch/loss")


def interrupt_in_epoch_2(monkeypatch, name, config, x, y, out, schedule=None):
    """Run until a checkpoint of epoch 1 exists, then interrupt mid-way through epoch 2 (as Ctrl-C would)."""
    real_loss, calls = families.Family.loss, {"n": 0}
    per_epoch = -(-len(x) // config.batch_size)

    def dies_in_epoch_2(*args, **kw):
        calls["n"] += 1
        if calls["n"] == per_epoch + 2:
            raise KeyboardInterrupt
        return real_loss(*args, **kw)

    monkeypatch.setattr(families.Family, "loss", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(name, config, x, y, out, schedule)
    monkeypatch.setattr(families.Family, "loss", real_loss)
    assert (out.checkpoint / "last.pt").is_file() and not out.model.exists()


@pytest.mark.parametrize("change, reason", [
    (None, None),
    ("settings", "settings"), ("data", "data"), ("schedule", "schedule"), ("precision", "precision"),
    ("code", "code"),
])
def test_resume_refuses_a_checkpoint_of_a_changed_run(tmp_path, monkeypatch, capsys, change, reason):
    """A checkpoint resumes only the identical run; a change to the settings, the training data, the noise
    schedule, the precision that runs or the code starts afresh, says why, and ends as a fresh run would."""
    from difflab.training import loop as train_module

    x, y = tiny_data()
    schedule = NoiseSchedule.linear(20)
    base = cfg(kind="time_ddpm", epochs=2, snapshots=[], precision="auto")
    run = outputs(tmp_path, "run")
    interrupt_in_epoch_2(monkeypatch, "m", base, x, y, run, schedule)
    capsys.readouterr()
    config, x2, schedule2 = base, x, schedule
    if change == "settings":
        config = cfg(kind="time_ddpm", epochs=2, snapshots=[], precision="auto", lr=5e-3)
    elif change == "data":
        x2 = x[:48]
    elif change == "schedule":
        schedule2 = NoiseSchedule.linear(20, beta2=0.03)
    elif change == "precision":  # the same `precision: auto` resolving differently, as on another machine
        from difflab.pipeline import runtime
        other = not runtime.bf16_supported(torch.device("cpu"))
        monkeypatch.setattr(runtime, "bf16_supported", lambda device: other)
    elif change == "code":
        real = train_module.code_fingerprint
        monkeypatch.setattr(train_module, "code_fingerprint", lambda: "edited-" + real())
    train("m", config, x2, y[:len(x2)], run, schedule2)
    said = capsys.readouterr().out
    if change is None:
        assert "resuming after epoch 1" in said
        return
    assert f"made with other {reason}; starting afresh" in said and "resuming after" not in said
    fresh = outputs(tmp_path, "fresh")
    train("m", config, x2, y[:len(x2)], fresh, schedule2)
    assert sha(run.model) == sha(fresh.model)
    assert read_curve(run.live) == read_curve(fresh.live)


class RunsCode:
    """The classic pickle payload: unpickling it runs Python that creates `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def said_about(out, capsys):
    """The lines training printed about the checkpoint file."""
    return [line for line in capsys.readouterr().out.splitlines() if str(out.checkpoint / "last.pt") in line]


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_planted_checkpoint_runs_nothing_and_training_starts_afresh(tmp_path, capsys, recwarn, writer):
    """A last.pt whose unpickling would run code (as anyone who can write to a shared DVC remote could plant) is
    refused in one line; nothing runs, and training ends as a run without it does."""
    def plant(path, marker):
        looks_right = {"identity": {}, "epoch": 1, "live_step": 4, "model": RunsCode(marker), "opt": {},
                       "sched": None, "gen": torch.zeros(1, dtype=torch.uint8)}
        path.parent.mkdir(parents=True, exist_ok=True)
        if writer == "torch.save":
            torch.save(looks_right, path)
        else:
            path.write_bytes(pickle.dumps(looks_right, protocol=4))

    plant(tmp_path / "control.pt", tmp_path / "ran-under-full-pickle")
    with contextlib.suppress(Exception):  # the loader training used before: the payload is live
        torch.load(tmp_path / "control.pt", weights_only=False)
    assert (tmp_path / "ran-under-full-pickle").is_file()

    x, y = tiny_data()
    config = cfg(kind="class_fm", epochs=2, snapshots=[])
    run, marker = outputs(tmp_path, "run"), tmp_path / "ran"
    plant(run.checkpoint / "last.pt", marker)
    capsys.readouterr()
    train("m", config, x, y, run)
    said = said_about(run, capsys)
    assert not marker.exists()
    assert len(said) == 1 and "not a difflab checkpoint" in said[0] and said[0].endswith("starting afresh"), said
    assert not [w for w in recwarn if "pickle" in str(w.message)]
    fresh = outputs(tmp_path, "fresh")
    train("m", config, x, y, fresh)
    assert sha(run.model) == sha(fresh.model)


CORRUPTIONS = {
    "none": lambda s: s,
    "not a dict": lambda s: [s["epoch"]],
    "a field missing": lambda s: {k: v for k, v in s.items() if k != "gen"},
    "an extra field": lambda s: {**s, 7: "x"},
    "a field mistyped": lambda s: {**s, "epoch": "1"},
    "an epoch before the first": lambda s: {**s, "epoch": 0},
    "weights of another model": lambda s: {**s, "model": {"w": torch.zeros(1)}},
    "an optimizer of another model": lambda s: {**s, "opt": {"state": {}, "param_groups": []}},
    "a cut RNG state": lambda s: {**s, "gen": s["gen"][:16]},  # fails last: model, optimizer, scheduler loaded
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_checkpoint_of_the_wrong_shape_starts_afresh(tmp_path, monkeypatch, capsys, corruption):
    """A checkpoint that unpickles but is not what training wrote (another structure, types or shapes) is ignored
    in one line, and the run ends with a fresh run's bytes, even when some of its parts had already loaded."""
    x, y = tiny_data()
    config = cfg(kind="class_fm", epochs=2, snapshots=[])
    run = outputs(tmp_path, "run")
    interrupt_in_epoch_2(monkeypatch, "m", config, x, y, run)
    last = run.checkpoint / "last.pt"
    torch.save(CORRUPTIONS[corruption](torch.load(last, weights_only=True)), last)
    capsys.readouterr()
    train("m", config, x, y, run)
    said = said_about(run, capsys)
    assert len(said) == 1, said
    if corruption == "none":
        assert "resuming after epoch 1" in said[0]
    else:
        assert "not a difflab checkpoint" in said[0] and said[0].endswith("starting afresh"), said
    fresh = outputs(tmp_path, "fresh")
    train("m", config, x, y, fresh)
    assert sha(run.model) == sha(fresh.model)
    assert read_curve(run.live) == read_curve(fresh.live)


def test_code_fingerprint_follows_the_loaded_modules(tmp_path, monkeypatch):
    """The code hash covers every loaded difflab module: editing one changes it."""
    import sys
    import types

    from difflab.pipeline.runtime import code_fingerprint

    module_file = tmp_path / "probe.py"
    module_file.write_text("X = 1\n")
    probe = types.ModuleType("difflab._probe")
    probe.__file__ = str(module_file)
    monkeypatch.setitem(sys.modules, "difflab._probe", probe)
    before = code_fingerprint()
    assert code_fingerprint() == before
    module_file.write_text("X = 2\n")
    assert code_fingerprint() != before


def test_nan_loss_stops_with_model_epoch_and_step(tmp_path):
    x, y = tiny_data()
    x[5] = float("nan")
    out = outputs(tmp_path)
    with pytest.raises(TrainingDiverged, match=r"training mymodel: loss became nan at epoch 1, step \d+"):
        train("mymodel", cfg(kind="denoiser"), x, y, out)
    assert not out.model.exists()
