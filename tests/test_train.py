"""The training loop: learns, is byte-reproducible, resumes exactly, and refuses to write a diverged model."""
import hashlib

import pytest
import torch

from difflab import objectives
from difflab.schedule import DDPMSchedule
from difflab.train import Outputs, TrainConfig, TrainingDiverged, train
from difflab.training_log import read_curve
from difflab.weights import load_model


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


def test_same_seed_same_bytes_different_seed_different_bytes(tmp_path):
    x, y = tiny_data()
    s = DDPMSchedule.linear(20)
    a, b, c = outputs(tmp_path, "a"), outputs(tmp_path, "b"), outputs(tmp_path, "c")
    train("m", cfg(), x, y, a, s)
    train("m", cfg(), x, y, b, s)
    train("m", cfg(seed=1), x, y, c, s)
    assert sha(a.model) == sha(b.model) != sha(c.model)
    assert sorted(p.name for p in a.snapshots.iterdir()) == ["epoch_01.safetensors", "epoch_03.safetensors"]
    assert (a.checkpoint / "complete.json").is_file() and not (a.checkpoint / "last.pt").exists()


def test_interrupted_run_resumes_to_identical_bytes(tmp_path, monkeypatch):
    x, y = tiny_data()
    s = DDPMSchedule.linear(20)
    ref = outputs(tmp_path, "ref")
    train("m", cfg(kind="class_fm"), x, y, ref)
    run = outputs(tmp_path, "run")
    real_loss, calls = objectives.loss, {"n": 0}

    def dies_in_epoch_3(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2 * 4 + 2:  # 4 batches per epoch: interrupt mid-way through epoch 3
            raise KeyboardInterrupt
        return real_loss(*args, **kw)

    monkeypatch.setattr(objectives, "loss", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train("m", cfg(kind="class_fm"), x, y, run)
    assert (run.checkpoint / "last.pt").is_file() and not run.model.exists()
    monkeypatch.setattr(objectives, "loss", real_loss)
    train("m", cfg(kind="class_fm"), x, y, run)
    assert sha(run.model) == sha(ref.model)
    assert read_curve(run.live) == read_curve(ref.live)
    assert read_curve(run.live, "epoch/loss") == read_curve(ref.live, "epoch/loss")
    del s


def test_changed_settings_do_not_resume_a_stale_checkpoint(tmp_path, monkeypatch):
    x, y = tiny_data()
    run = outputs(tmp_path)
    monkeypatch.setattr(objectives, "loss", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        train("m", cfg(kind="time_fm"), x, y, run)
    monkeypatch.undo()
    fresh = outputs(tmp_path, "fresh")
    train("m", cfg(kind="time_fm", lr=5e-3), x, y, run)
    train("m", cfg(kind="time_fm", lr=5e-3), x, y, fresh)
    assert sha(run.model) == sha(fresh.model)


def test_nan_loss_stops_with_model_epoch_and_step(tmp_path):
    x, y = tiny_data()
    x[5] = float("nan")
    out = outputs(tmp_path)
    with pytest.raises(TrainingDiverged, match=r"training mymodel: loss became nan at epoch 1, step \d+"):
        train("mymodel", cfg(kind="denoiser"), x, y, out)
    assert not out.model.exists()
