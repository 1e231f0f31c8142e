"""One training loop for every Part B model: Adam, optional ExponentialLR (per epoch, the spec's, or per step),
optional grad clipping, DVCLive logging, snapshots at chosen epochs (and, for generative models, at a few steps of
the first epoch: sample@'s slider), and a resumable checkpoint after every epoch.
Opt-in recipe changes (all off by default, which is the spec's recipe): lr warm-up, per-step lr decay, an EMA of the
weights (with a power-law warm-up), logit-normal flow times, min-SNR-gamma DDPM weights, v-prediction."""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import pickle
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from difflab.core.families import Family, make_family
from difflab.core.schedule import NoiseSchedule
from difflab.core.weights import save_model
from difflab.pipeline.errors import DifflabError, write_atomically
from difflab.pipeline.params import LR_DECAY_EVERY, Kind
from difflab.pipeline.paths import Outputs
from difflab.pipeline.runtime import (
    autocast,
    code_fingerprint,
    generator,
    resolve_device,
    resolve_precision,
    run_info,
    seed_everything,
)


# Generative models also keep their weights at this many evenly spaced optimizer steps inside the first epoch, where
# samples change most; sample@ renders them beside the epoch snapshots (issue 23: samples on a slider).
IN_EPOCH_SNAPSHOTS = 3


def in_epoch_steps(steps_per_epoch: int, count: int = IN_EPOCH_SNAPSHOTS) -> list[int]:
    """The steps (optimizer steps done, DVCLive's step after them) strictly inside the first epoch at which a
    generative model keeps a snapshot: `count` evenly spaced ones, k * steps_per_epoch // (count + 1), fewer when the
    epoch is too short to hold them."""
    return sorted({k * steps_per_epoch // (count + 1) for k in range(1, count + 1)} - {0, steps_per_epoch})


@dataclass
class TrainConfig:
    kind: str
    hidden: int = 64
    batch_size: int = 128
    epochs: int = 1
    lr: float = 1e-3
    lr_decay: bool = False     # ExponentialLR to 0.1 x lr over the run (`lr_schedule`)
    lr_decay_every: str = "epoch"  # when it steps: after each epoch (the spec's) or after each optimizer step
    grad_clip: float = 0.0     # max grad norm; 0 = off
    sigma: float = 0.5         # denoiser noise level
    p_uncond: float = 0.1      # class dropout for classifier-free guidance
    snapshots: list[int] = field(default_factory=list)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    ema_decay: float = 0.0     # snapshots and the model are an EMA of the weights (`EMA`); 0 = off
    ema_power: float = 0.0     # EMA warm-up 1 - (1 + k)^-ema_power (`EMA.rate`); 0 = (1 + k) / (10 + k)
    warmup_steps: int = 0      # lr rises linearly over the first optimizer steps (`warmup_factor`); 0 = off
    t_sampling: str = "uniform"  # flow kinds: uniform | logit_normal (families.sample_flow_t)
    t_logit_mean: float = 0.0
    t_logit_std: float = 1.0
    min_snr_gamma: float = 0.0  # DDPM kinds: min-SNR-gamma loss weights (families.min_snr_weight); 0 = off
    prediction: str = "eps"    # DDPM kinds: the UNet predicts eps (the spec's) or v (families.v_target)


class EMA:
    """Exponential moving average of a model's weights and BatchNorm statistics, with warm-up: update k (0, 1, ...)
    does ema = d ema + (1 - d) w with d = min(decay, (1 + k) / (10 + k)), so early averages forget the random init
    quickly (the schedule of tf.train.ExponentialMovingAverage's num_updates and timm's ModelEma); with power > 0,
    d = min(decay, 1 - (1 + k)^-power), k-diffusion's EMAWarmup (inv_gamma 1), which averages over a growing
    fraction of the run (power 2/3 to 3/4 for short runs)."""

    def __init__(self, model: torch.nn.Module, decay: float, power: float = 0.0):
        self.decay, self.power, self.updates = decay, power, 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def rate(self) -> float:
        """The decay d of the next update."""
        k = self.updates
        return min(self.decay, 1 - (1 + k) ** -self.power if self.power > 0 else (1 + k) / (10 + k))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.rate()  # parameters() and buffers() rather than state_dict(): 0.6 ms a step instead of 2.6 (D = 32)
        for avg, w in zip([*self.model.parameters(), *self.model.buffers()], [*model.parameters(), *model.buffers()]):
            if avg.is_floating_point():
                avg.lerp_(w, 1 - d)  # avg + (1 - d)(w - avg) = d avg + (1 - d) w
            else:
                avg.copy_(w)         # BatchNorm's num_batches_tracked
        self.updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = state["updates"]


class _WithEMA:
    """The model and its EMA as one checkpoint entry (used only when EMA is on, so default checkpoints keep their
    format)."""

    def __init__(self, model: torch.nn.Module, ema: EMA):
        self.model, self.ema = model, ema

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])


def lr_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig,
                num_images: int) -> torch.optim.lr_scheduler.ExponentialLR | None:
    """The lr decay of `cfg.lr_decay`: 0.1 x over the run, stepped after every epoch (the spec's) or, with
    lr_decay_every "step", after every optimizer step (so one-epoch runs decay too); None without decay."""
    if not cfg.lr_decay:
        return None
    if cfg.lr_decay_every == "epoch":
        return torch.optim.lr_scheduler.ExponentialLR(opt, 0.1 ** (1 / cfg.epochs))
    if cfg.lr_decay_every == "step":
        steps = cfg.epochs * -(-num_images // cfg.batch_size)
        return torch.optim.lr_scheduler.ExponentialLR(opt, 0.1 ** (1 / steps))
    raise ValueError(f"lr_decay_every must be one of {LR_DECAY_EVERY}, got {cfg.lr_decay_every!r}")


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The lr multiplier of optimizer step `step` (0-based): (step + 1) / warmup_steps until it reaches 1."""
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
    return h.hexdigest()[:16]


def run_identity(cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, schedule: NoiseSchedule | None) -> dict[str, str]:
    """Every input that changes what a run computes, each hashed: a checkpoint resumes only a run whose identity
    is equal in every part (settings, training data, noise schedule, the device and precision that really run, and
    the code), and a mismatch names the parts that changed."""
    device = resolve_device(cfg.device)
    return {
        "settings": _digest(json.dumps(asdict(cfg), sort_keys=True)),
        "data": _digest(str(tuple(x.shape)), x.detach().cpu().contiguous().numpy().tobytes(),
                        y.detach().cpu().contiguous().numpy().tobytes()),
        "schedule": _digest(schedule.betas.numpy().tobytes()) if schedule is not None else "none",
        "device": str(device),
        "precision": resolve_precision(device, cfg.precision),
        "code": code_fingerprint(),
    }


class TrainingDiverged(DifflabError, FloatingPointError):
    """The loss became NaN or infinite; the message names the model, the step and the params to change."""


def train(name: str, cfg: TrainConfig, x: torch.Tensor, y: torch.Tensor, out: Outputs,
          schedule: NoiseSchedule | None = None,
          on_step: Callable[[int, torch.nn.Module], None] | None = None) -> dict:
    """Train `cfg.kind` on images x (N,1,28,28 in [0,1]) and labels y; returns the final summary metrics.
    `on_step(steps_done, model)` is called after every optimizer step with the raw weights (bench/frontier.py
    scores a run part-way with it)."""
    from dvclive import Live

    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    family = make_family(cfg.kind, schedule, p_uncond=cfg.p_uncond, sigma=cfg.sigma, t_sampling=cfg.t_sampling,
                         t_logit_mean=cfg.t_logit_mean, t_logit_std=cfg.t_logit_std, min_snr_gamma=cfg.min_snr_gamma,
                         prediction=cfg.prediction)
    model = family.build(cfg.hidden).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = lr_schedule(opt, cfg, len(x))
    ema = EMA(model, cfg.ema_decay, cfg.ema_power) if cfg.ema_decay > 0 else None
    per_epoch = -(-len(x) // cfg.batch_size)
    inner = in_epoch_steps(per_epoch) if Kind.parse(cfg.kind).generative else []
    run = _Run(name, cfg, family, model, opt, sched, generator(device, cfg.seed), ema, on_step, out.snapshots,
               per_epoch, frozenset(inner))
    identity = run_identity(cfg, x, y, schedule)
    start, live_step = run.resume(out, identity)
    run.live = Live(str(out.live), resume=start > 1, dvcyaml=False, save_dvc_exp=False)
    run.live.step = live_step
    x, y = x.to(device), y.to(device)
    snapshots, epoch_loss = set(cfg.snapshots) | {cfg.epochs}, float("nan")
    for epoch in range(start, cfg.epochs + 1):
        epoch_loss = run.epoch(x, y, epoch)
        print(f"[{name}] epoch {epoch}/{cfg.epochs} loss {epoch_loss:.5f}")
        if sched is not None and cfg.lr_decay_every == "epoch":
            sched.step()
        if epoch in snapshots:
            run.snapshot(f"epoch_{epoch:02d}.safetensors")
        _save_checkpoint(out.checkpoint, {"identity": identity, "epoch": epoch, "live_step": run.live.step,
                                          **run.state()})
    save_model(out.model, run.weights, cfg.kind)
    _finish_checkpoint(out.checkpoint, identity)
    run.live.summary["final_epoch_loss"] = epoch_loss
    run.live.summary["run"] = run_info(device, cfg.precision)
    run.live.make_summary()
    return {"final_epoch_loss": epoch_loss}


@dataclass
class _Run:
    """The moving parts of one training run, and its epoch."""
    name: str
    cfg: TrainConfig
    family: Family
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler | None
    gen: torch.Generator
    ema: EMA | None
    on_step: Callable[[int, torch.nn.Module], None] | None
    snapshot_dir: Path
    steps_per_epoch: int
    inner_steps: frozenset[int]  # the in-epoch snapshot steps (in_epoch_steps)
    live: object = None  # dvclive.Live, opened after resume() decided whether it resumes

    @property
    def trained(self):
        """What a checkpoint holds: the model, with its EMA when there is one."""
        return _WithEMA(self.model, self.ema) if self.ema is not None else self.model

    @property
    def weights(self) -> torch.nn.Module:
        """What snapshots and the final model save: the EMA when there is one."""
        return self.ema.model if self.ema is not None else self.model

    def snapshot(self, file: str) -> None:
        """Keep the weights as they are now in snapshot_dir, recording the step and epoch they were taken at."""
        step = self.live.step
        save_model(self.snapshot_dir / file, self.weights, self.cfg.kind, at=(step, step / self.steps_per_epoch))

    def state(self) -> dict:
        """The training state a checkpoint holds besides its identity and position."""
        return {"model": self.trained.state_dict(), "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict() if self.sched is not None else None, "gen": self.gen.get_state()}

    def load_state(self, state: dict) -> None:
        """Put back what `state()` returned; raises when its parts do not fit this run's model and optimizer."""
        self.trained.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        if self.sched is not None:
            self.sched.load_state_dict(state["sched"])
        self.gen.set_state(state["gen"])

    def resume(self, out: Outputs, identity: dict) -> tuple[int, int]:
        """(first epoch, DVCLive step): from an interrupted identical run's checkpoint, else afresh from clean
        outputs. A checkpoint whose parts do not fit this run is not one of its checkpoints: the fresh state comes
        back, so the run is the one a missing checkpoint gives."""
        path = out.checkpoint / "last.pt"
        state = _load_checkpoint(path, identity, self.cfg.epochs, self.name)
        if state is not None:
            fresh = copy.deepcopy(self.state())
            try:
                self.load_state(state)
            except Exception as err:  # model, optimizer, scheduler or RNG state of another shape: a wrong file
                _not_a_checkpoint(self.name, path, err)
                self.load_state(fresh)
                state = None
        if state is None:
            _clean(out)
            return 1, 0
        _truncate_live(out.live, state["live_step"])
        print(f"[{self.name}] resuming after epoch {state['epoch']} from {path}")
        return state["epoch"] + 1, state["live_step"]

    def epoch(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> float:
        """One pass over the data in a fresh random order; returns the epoch's mean loss."""
        cfg, live, n = self.cfg, self.live, len(x)
        self.model.train()
        perm = torch.randperm(n, generator=self.gen, device=x.device)
        total, count = 0.0, 0
        bar = tqdm(range(0, n, cfg.batch_size), desc=f"{self.name} epoch {epoch}/{cfg.epochs}", leave=False,
                   mininterval=2)
        for i in bar:
            idx = perm[i:i + cfg.batch_size]
            value = self.update(x[idx], y[idx], epoch)
            total, count = total + value * len(idx), count + len(idx)
            live.log_metric("train/loss", value)
            if i + cfg.batch_size >= n:  # epoch rows share the last batch's step, so they truncate with it
                live.log_metric("epoch/loss", total / count)
                live.log_metric("epoch/lr", self.opt.param_groups[0]["lr"])
            live.next_step()
            if live.step in self.inner_steps:
                self.snapshot(f"step_{live.step:06d}.safetensors")
            bar.set_postfix(loss=f"{value:.4f}", refresh=False)  # redraw at tqdm's mininterval, not every step
        return total / count

    def update(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> float:
        """One optimizer step on a batch (lr warm-up, grad clipping, EMA); returns the batch loss."""
        cfg = self.cfg
        with autocast(x.device, cfg.precision):
            loss = self.family.loss(self.model, x, y, self.gen)
        value = loss.item()
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"training {self.name}: loss became {value} at epoch {epoch}, step "
                                   f"{self.live.step}; no model was written. Lower `lr` or set `grad_clip` for "
                                   f"{self.name} in params.yaml")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        _step(self.opt, warmup_factor(self.live.step, cfg.warmup_steps))
        if self.sched is not None and cfg.lr_decay_every == "step":
            self.sched.step()
        if self.ema is not None:
            self.ema.update(self.model)
        if self.on_step is not None:
            self.on_step(self.live.step + 1, self.model)
        return value


def _step(opt: torch.optim.Optimizer, lr_scale: float) -> None:
    """One optimizer step at lr x lr_scale (the warm-up); the scheduled lr is restored after, so ExponentialLR, per
    epoch or per step, decays the scheduled lr and the warm-up scales it: lr_k = lr gamma^k warmup_factor(k)."""
    if lr_scale == 1.0:
        opt.step()
        return
    scheduled = [group["lr"] for group in opt.param_groups]
    for group in opt.param_groups:
        group["lr"] *= lr_scale
    opt.step()
    for group, lr in zip(opt.param_groups, scheduled):
        group["lr"] = lr


def _clean(out: Outputs) -> None:
    """A fresh run starts from empty outputs so nothing stale (old snapshots, old curves) survives."""
    import shutil
    for d in (out.snapshots, out.live):
        shutil.rmtree(d, ignore_errors=True)
    out.snapshots.mkdir(parents=True, exist_ok=True)


# What _save_checkpoint writes, field by field: a file without exactly these is not a difflab checkpoint.
_CHECKPOINT_FIELDS = {"identity": dict, "epoch": int, "live_step": int, "model": dict, "opt": dict,
                      "sched": (dict, type(None)), "gen": torch.Tensor}


def _save_checkpoint(ckpt_dir: Path, state: dict) -> None:
    """Replace last.pt atomically: a failed write (disk full, read-only directory) keeps the previous checkpoint."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomically(ckpt_dir / "last.pt", buffer.getvalue())


def _load_checkpoint(path: Path, identity: dict, epochs: int, name: str) -> dict | None:
    """The last checkpoint of an interrupted run with an identical identity, else None (saying why). It is read
    with torch's weights-only unpickler: a last.pt pulled from a shared DVC remote is data (tensors, numbers,
    strings, containers) and never code that runs."""
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's note on a pickle protocol it did not write
            state = torch.load(path, map_location="cpu", weights_only=True)
        _check_fields(state)
    except Exception as err:  # cut short by SIGKILL, planted or misplaced: only lost progress, never fatal
        _not_a_checkpoint(name, path, err)
        return None
    changed = [key for key in identity if state["identity"].get(key) != identity[key]]
    if changed:
        print(f"[{name}] not resuming {path}: it was made with other {', '.join(changed)}; starting afresh")
        return None
    if state["epoch"] >= epochs:
        return None
    return state


def _check_fields(state: object) -> None:
    """Raise ValueError unless `state` has exactly the fields _save_checkpoint writes, of their types."""
    if not isinstance(state, dict):
        raise ValueError(f"it holds a {type(state).__name__}, not a dict")
    wrong = sorted(map(str, set(state) ^ set(_CHECKPOINT_FIELDS))) or [
        key for key, kind in _CHECKPOINT_FIELDS.items() if not isinstance(state[key], kind)]
    if wrong:
        raise ValueError(f"missing, unexpected or mistyped fields: {', '.join(wrong)}")
    if state["epoch"] < 1 or state["live_step"] < 0:
        raise ValueError(f"epoch {state['epoch']}, DVCLive step {state['live_step']}")


def _not_a_checkpoint(name: str, path: Path, err: Exception) -> None:
    """Say in one line that `path` is ignored and why; training then starts afresh."""
    if isinstance(err, pickle.UnpicklingError):  # torch's own text suggests weights_only=False, the very hole
        why = "UnpicklingError: the weights-only unpickler reads tensors and plain data, nothing else"
    else:
        why = " ".join(f"{type(err).__name__}: {err}".split())
        why = why if len(why) <= 200 else why[:197] + "..."
    print(f"[{name}] ignoring {path}: not a difflab checkpoint ({why}); starting afresh")


def _finish_checkpoint(ckpt_dir: Path, identity: dict) -> None:
    """A finished run keeps only a marker: a later `dvc repro -f` must retrain, not resume."""
    (ckpt_dir / "last.pt").unlink(missing_ok=True)
    write_atomically(ckpt_dir / "complete.json", (json.dumps({"identity": identity}, sort_keys=True) + "\n").encode())


def _truncate_live(live_dir: Path, step: int) -> None:
    """Drop DVCLive rows logged after the checkpoint, so a resumed curve has no duplicated steps."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        with open(tsv, newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if not rows:
            continue
        step_col = rows[0].index("step")
        kept = [rows[0]] + [r for r in rows[1:] if int(r[step_col]) < step]
        table = io.StringIO()
        csv.writer(table, delimiter="\t", lineterminator="\n").writerows(kept)
        write_atomically(tsv, table.getvalue())  # the logs are persisted, not cached: a half-written one is lost
