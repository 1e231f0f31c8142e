"""One training loop for every Part B model: Adam, optional per-epoch ExponentialLR, optional grad clipping,
DVCLive logging, snapshots at chosen epochs and a resumable checkpoint after every epoch."""
from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from difflab import objectives
from difflab.errors import DifflabError, write_atomically
from difflab.runtime import autocast, generator, resolve_device, seed_everything
from difflab.schedule import DDPMSchedule
from difflab.weights import save_model


@dataclass
class TrainConfig:
    kind: str
    hidden: int = 64
    batch_size: int = 128
    epochs: int = 1
    lr: float = 1e-3
    lr_decay: bool = False     # ExponentialLR(gamma = 0.1 ** (1 / epochs)), stepped once per epoch
    grad_clip: float = 0.0     # max grad norm; 0 = off
    sigma: float = 0.5         # denoiser noise level
    p_uncond: float = 0.1      # class dropout for classifier-free guidance
    snapshots: list[int] = field(default_factory=list)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"

    def fingerprint(self) -> str:
        """Identifies a run: a checkpoint resumes only a run with exactly these settings."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Outputs:
    model: Path          # final weights (safetensors)
    snapshots: Path      # directory of epoch_XX.safetensors
    live: Path           # DVCLive directory
    checkpoint: Path     # directory holding last.pt while a run is incomplete


class TrainingDiverged(DifflabError, FloatingPointError):
    """The loss became NaN or infinite; the message names the model, the step and the params to change."""


def train(name: str, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, out: Outputs,
          schedule: DDPMSchedule | None = None) -> dict:
    """Train `cfg.kind` on images x (N,1,28,28 in [0,1]) and labels y; returns the final summary metrics."""
    from dvclive import Live

    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    model = objectives.build_model(cfg.kind, cfg.hidden).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.1 ** (1 / cfg.epochs)) if cfg.lr_decay else None
    gen = generator(device, cfg.seed)
    start, live_step = 1, 0
    state = _load_checkpoint(out.checkpoint, cfg)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if sched is not None:
            sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        start, live_step = state["epoch"] + 1, state["live_step"]
        _truncate_live(out.live, live_step)
        print(f"[{name}] resuming after epoch {state['epoch']} from {out.checkpoint / 'last.pt'}")
    else:
        _clean(out)
    live = Live(str(out.live), resume=state is not None, dvcyaml=False, save_dvc_exp=False)
    live.step = live_step
    x, y = x.to(device), y.to(device)
    n, snapshots = len(x), set(cfg.snapshots) | {cfg.epochs}
    epoch_loss = float("nan")
    for epoch in range(start, cfg.epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen, device=device)
        total, count = 0.0, 0
        bar = tqdm(range(0, n, cfg.batch_size), desc=f"{name} epoch {epoch}/{cfg.epochs}", leave=False,
                   mininterval=2)
        for i in bar:
            idx = perm[i:i + cfg.batch_size]
            with autocast(device, cfg.precision):
                loss = objectives.loss(cfg.kind, model, x[idx], y[idx], gen, sigma=cfg.sigma,
                                       p_uncond=cfg.p_uncond, schedule=schedule)
            value = loss.item()
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"training {name}: loss became {value} at epoch {epoch}, step {live.step}; "
                                       f"no model was written. Lower `lr` or set `grad_clip` for {name} in params.yaml")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            total, count = total + value * len(idx), count + len(idx)
            live.log_metric("train/loss", value)
            if i + cfg.batch_size >= n:  # epoch rows share the last batch's step, so they truncate with it
                epoch_loss = total / count
                live.log_metric("epoch/loss", epoch_loss)
                live.log_metric("epoch/lr", opt.param_groups[0]["lr"])
            live.next_step()
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)  # redraw at tqdm's mininterval, not every step
        print(f"[{name}] epoch {epoch}/{cfg.epochs} loss {epoch_loss:.5f}")
        if sched is not None:
            sched.step()
        if epoch in snapshots:
            save_model(out.snapshots / f"epoch_{epoch:02d}.safetensors", model, cfg.kind)
        _save_checkpoint(out.checkpoint, cfg, epoch, live.step, model, opt, sched, gen)
    save_model(out.model, model, cfg.kind)
    _finish_checkpoint(out.checkpoint, cfg)
    live.summary["final_epoch_loss"] = epoch_loss
    live.make_summary()
    return {"final_epoch_loss": epoch_loss}


def _clean(out: Outputs) -> None:
    """A fresh run starts from empty outputs so nothing stale (old snapshots, old curves) survives."""
    import shutil
    for d in (out.snapshots, out.live):
        shutil.rmtree(d, ignore_errors=True)
    out.snapshots.mkdir(parents=True, exist_ok=True)


def _save_checkpoint(ckpt_dir: Path, cfg: TrainConfig, epoch: int, live_step: int, model, opt, sched, gen) -> None:
    """Replace last.pt atomically: a failed write (disk full, read-only directory) keeps the previous checkpoint."""
    buffer = io.BytesIO()
    torch.save({"fingerprint": cfg.fingerprint(), "epoch": epoch, "live_step": live_step,
                "model": model.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict() if sched is not None else None, "gen": gen.get_state()}, buffer)
    write_atomically(ckpt_dir / "last.pt", buffer.getvalue())


def _load_checkpoint(ckpt_dir: Path, cfg: TrainConfig) -> dict | None:
    """The last checkpoint of an interrupted run with identical settings, else None."""
    path = ckpt_dir / "last.pt"
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a checkpoint cut short by SIGKILL is only lost progress, never fatal
        print(f"ignoring unreadable checkpoint {path}: {err}")
        return None
    if state.get("fingerprint") != cfg.fingerprint() or state["epoch"] >= cfg.epochs:
        return None
    return state


def _finish_checkpoint(ckpt_dir: Path, cfg: TrainConfig) -> None:
    """A finished run keeps only a marker: a later `dvc repro -f` must retrain, not resume."""
    (ckpt_dir / "last.pt").unlink(missing_ok=True)
    write_atomically(ckpt_dir / "complete.json", (json.dumps({"fingerprint": cfg.fingerprint()}) + "\n").encode())


def _truncate_live(live_dir: Path, step: int) -> None:
    """Drop DVCLive rows logged after the checkpoint, so a resumed curve has no duplicated steps."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        with open(tsv, newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if not rows:
            continue
        step_col = rows[0].index("step")
        kept = [rows[0]] + [r for r in rows[1:] if int(r[step_col]) < step]
        with open(tsv, "w", newline="") as f:
            csv.writer(f, delimiter="\t", lineterminator="\n").writerows(kept)
