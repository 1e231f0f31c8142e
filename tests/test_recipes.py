"""Opt-in recipe changes (EMA with warm-up, lr warm-up, logit-normal flow times, min-SNR-gamma DDPM weights): each
does what its formula says, and with all of them off training is the spec's loop, byte for byte."""
import copy
import hashlib
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from difflab.core import families
from difflab.core.schedule import NoiseSchedule, flow_interpolate
from difflab.core.unet import one_hot
from difflab.pipeline.params import ParamsError, validate
from difflab.pipeline.paths import Outputs
from difflab.pipeline.runtime import autocast, generator, seed_everything
from difflab.training.loop import EMA, TrainConfig, _step, train, warmup_factor

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]


def tiny_data(n=48):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 10
    x = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        x[i, 0, 2 + 2 * y[i], 4:24] = 1.0
    return (x + 0.05 * torch.rand(x.shape, generator=g)).clamp(0, 1), y


def outputs(tmp_path, tag):
    base = tmp_path / tag
    return Outputs(base / "model.safetensors", base / "snapshots", base / "live", base / "ckpt")


def cfg(**kw):
    base = dict(kind="time_fm", hidden=4, batch_size=16, epochs=2, lr=1e-2, lr_decay=True, snapshots=[1],
                device="cpu", precision="fp32")
    return TrainConfig(**{**base, **kw})


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------- EMA

def test_ema_is_the_hand_computed_average_with_warm_up():
    model = torch.nn.Sequential(torch.nn.Linear(1, 1, bias=False), torch.nn.BatchNorm1d(1))
    w = model[0].weight
    with torch.no_grad():
        w.fill_(2.0)
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        w.fill_(4.0)
    model[1].num_batches_tracked.fill_(7)
    ema.update(model)                     # d = min(0.999, 1/10) = 0.1
    assert ema.model[0].weight.item() == pytest.approx(0.1 * 2.0 + 0.9 * 4.0, abs=1e-6)
    assert ema.model[1].num_batches_tracked.item() == 7  # integer buffers are copied, not averaged
    with torch.no_grad():
        w.fill_(10.0)
    ema.update(model)                     # d = min(0.999, 2/11)
    d = 2 / 11
    assert ema.model[0].weight.item() == pytest.approx(d * 3.8 + (1 - d) * 10.0, abs=1e-6)
    assert ema.updates == 2 and ema.rate() == pytest.approx(3 / 12)
    capped = EMA(model, decay=0.05)
    assert capped.rate() == 0.05          # the decay caps the warm-up schedule
    for _ in range(1000):
        capped.update(model)
    assert EMA(model, 0.9).rate() == 0.1 and capped.rate() == 0.05


def test_training_with_ema_saves_the_average_of_the_weights_it_stepped_through(tmp_path):
    x, y = tiny_data()
    seen = []
    out = outputs(tmp_path, "ema")
    train("m", cfg(ema_decay=0.9), x, y, out,
          on_step=lambda step, model: seen.append({k: v.detach().clone() for k, v in model.state_dict().items()}))
    assert len(seen) == 2 * 3
    seed_everything(0)
    init = families.build_model("time_fm", 4).state_dict()
    expected = {k: v.clone() for k, v in init.items()}
    for k, state in enumerate(seen):
        d = min(0.9, (1 + k) / (10 + k))
        for name, v in state.items():
            expected[name] = d * expected[name] + (1 - d) * v if v.is_floating_point() else v
    saved = load_file(str(out.model))
    assert set(saved) == set(expected)
    for name, v in expected.items():
        assert torch.allclose(saved[name], v, atol=1e-6) if v.is_floating_point() else torch.equal(saved[name], v)
    raw = seen[-1]["head.weight"]
    assert not torch.allclose(saved["head.weight"], raw, atol=1e-4)  # the EMA, not the last weights
    snapshot = load_file(str(out.snapshots / "epoch_01.safetensors"))
    assert not torch.equal(snapshot["head.weight"], saved["head.weight"])


def interrupted_in_epoch_3_then_resumed(tmp_path, monkeypatch, config) -> tuple[Outputs, Outputs, dict]:
    """(an uninterrupted run, the same run interrupted in epoch 3 and resumed, the checkpoint it resumed from)."""
    x, y = tiny_data()
    ref = outputs(tmp_path, "ref")
    train("m", config, x, y, ref)
    run = outputs(tmp_path, "run")
    real_loss, calls = families.Family.loss, {"n": 0}

    def dies_in_epoch_3(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2 * 3 + 2:
            raise KeyboardInterrupt
        return real_loss(*args, **kw)

    monkeypatch.setattr(families.Family, "loss", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train("m", config, x, y, run)
    checkpoint = torch.load(run.checkpoint / "last.pt", weights_only=True)  # plain tensors and numbers only
    monkeypatch.setattr(families.Family, "loss", real_loss)
    train("m", config, x, y, run)
    return ref, run, checkpoint


def test_interrupted_ema_run_resumes_to_identical_bytes(tmp_path, monkeypatch):
    ref, run, _ = interrupted_in_epoch_3_then_resumed(tmp_path, monkeypatch, cfg(ema_decay=0.95, epochs=3))
    assert sha(run.model) == sha(ref.model)


# ---------------------------------------------------------------- lr warm-up

def test_warmup_factor_rises_linearly_to_one():
    assert [warmup_factor(k, 4) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def test_step_scales_the_lr_once_and_restores_the_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    p.grad = torch.ones(1)
    _step(opt, 0.25)
    assert p.item() == pytest.approx(-0.25) and opt.param_groups[0]["lr"] == 1.0


@pytest.mark.parametrize("warmup, scale", [(0, 1.0), (4, 0.25)])
def test_first_adam_step_of_training_moves_weights_by_the_warmed_up_lr(tmp_path, warmup, scale):
    """Adam's first step moves each weight by about lr * sign(grad); with warm-up over 4 steps, by lr / 4."""
    x, y = tiny_data()
    seed_everything(0)
    init = {k: v.clone() for k, v in families.build_model("time_fm", 4).named_parameters()}
    first = {}

    def grab(step, model):
        if step == 1:
            first.update({k: v.detach().clone() for k, v in model.named_parameters()})

    train("m", cfg(warmup_steps=warmup, epochs=1, lr_decay=False), x, y, outputs(tmp_path, "w"), on_step=grab)
    largest = max((first[k] - init[k]).abs().max().item() for k in init)
    assert largest == pytest.approx(1e-2 * scale, rel=0.01)


# ---------------------------------------------------------------- flow times

def test_logit_normal_times_have_the_right_median_and_spread():
    gen = torch.Generator().manual_seed(0)
    t = families.sample_flow_t(200_000, gen, torch.device("cpu"), "logit_normal", 0.5, 1.5)
    assert ((t > 0) & (t < 1)).all()
    logit = torch.log(t / (1 - t))
    assert logit.median().item() == pytest.approx(0.5, abs=0.02)
    assert logit.std().item() == pytest.approx(1.5, abs=0.02)
    assert t.median().item() == pytest.approx(1 / (1 + math.exp(-0.5)), abs=0.005)
    u = families.sample_flow_t(200_000, gen, torch.device("cpu"))
    assert ((u - 0.5).abs() > 0.4).float().mean().item() == pytest.approx(0.2, abs=0.01)  # uniform: 20% in the ends
    standard = families.sample_flow_t(200_000, gen, torch.device("cpu"), "logit_normal", 0.0, 1.0)
    ends = 2 * (1 - 0.5 * (1 + math.erf(math.log(9) / math.sqrt(2))))  # P(|logit t| > ln 9) = 2.8%
    assert ((standard - 0.5).abs() > 0.4).float().mean().item() == pytest.approx(ends, abs=0.002)


def test_flow_loss_trains_on_the_sampled_times():
    x, y = tiny_data(8)
    seen = {}

    def model(xt, t, c):
        seen["t"] = t
        return torch.zeros_like(xt)

    families.make_family("time_fm", t_sampling="logit_normal", t_logit_mean=-1.0, t_logit_std=0.5).loss(
        model, x, y, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    assert torch.equal(seen["t"], torch.sigmoid(-1.0 + 0.5 * torch.randn(8, generator=g)))
    families.make_family("time_fm").loss(model, x, y, torch.Generator().manual_seed(3))
    assert torch.equal(seen["t"], torch.rand(8, generator=torch.Generator().manual_seed(3)))


# ---------------------------------------------------------------- min-SNR-gamma

def test_min_snr_weights_are_min_snr_gamma_over_snr():
    s = NoiseSchedule.linear(300)
    t = torch.tensor([0, 9, 49, 99, 199, 299])
    abar = s.alphas_cumprod[t].double()
    snr = abar / (1 - abar)
    w = families.min_snr_weight(s, t, 5.0)
    assert torch.allclose(w.double(), torch.minimum(snr, torch.tensor(5.0, dtype=torch.float64)) / snr, rtol=1e-6)
    assert w[0] < 1e-3 and w[-1] == 1.0     # t = 0 (SNR ~ 1e4) is capped; t = T - 1 (SNR < 5) keeps weight 1


def test_ddpm_loss_with_min_snr_is_the_weighted_mean_of_per_image_errors():
    x, y = tiny_data(8)
    s = NoiseSchedule.linear(300)

    def zero_model(xt, t, c):
        return torch.zeros_like(xt)

    value = families.make_family("time_ddpm", s, min_snr_gamma=5.0).loss(zero_model, x, y,
                                                                           torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 300, (8,), generator=g)
    eps = torch.randn(x.shape, generator=g)
    abar = s.alphas_cumprod[t].double()
    snr = abar / (1 - abar)
    weights = (snr.clamp(max=5.0) / snr).float()
    assert value.item() == pytest.approx((weights * eps.pow(2).flatten(1).mean(1)).mean().item(), rel=1e-5)
    plain = families.make_family("time_ddpm", s).loss(zero_model, x, y, torch.Generator().manual_seed(5))
    assert plain.item() == pytest.approx(eps.pow(2).mean().item(), rel=1e-5) and value < 0.9 * plain


# ---------------------------------------------------------------- defaults = the spec's loop

@pytest.mark.parametrize("kind", ["time_ddpm", "class_fm"])
def test_defaults_train_exactly_the_spec_loop(tmp_path, kind):
    """With every option off, the weights equal a plain Adam loop over the spec's loss (written out here), bit for
    bit: the options add nothing to the default path."""
    x, y = tiny_data()
    s = NoiseSchedule.linear(20) if kind.endswith("_ddpm") else None
    config = cfg(kind=kind, epochs=1, lr_decay=False, snapshots=[], precision="auto")
    out = outputs(tmp_path, "default")
    train("m", config, x, y, out, s)

    device = torch.device("cpu")
    seed_everything(0)
    model = families.build_model(kind, 4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = generator(device, 0)
    model.train()
    perm = torch.randperm(len(x), generator=gen)
    for i in range(0, len(x), 16):
        idx = perm[i:i + 16]
        xb, yb, n = x[idx], y[idx], len(idx)
        with autocast(device, "auto"):
            c = one_hot(yb, torch.rand(n, generator=gen) < 0.1) if kind.startswith("class_") else None
            if kind.endswith("_ddpm"):
                t = torch.randint(0, s.num_ts, (n,), generator=gen)
                eps = torch.randn(xb.shape, generator=gen)
                value = F.mse_loss(model(s.forward(xb, t, eps), (t + 1) / s.num_ts, c), eps)
            else:
                t = torch.rand(n, generator=gen)
                noise = torch.randn(xb.shape, generator=gen)
                value = F.mse_loss(model(flow_interpolate(noise, xb, t), t, c), xb - noise)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    saved = load_file(str(out.model))
    for name, v in model.state_dict().items():
        assert torch.equal(saved[name], v.float() if v.is_floating_point() else v), name


# ---------------------------------------------------------------- params

DEFAULT = yaml.safe_load((REPO / "params.yaml").read_text())


def with_model_keys(name, **keys):
    p = copy.deepcopy(DEFAULT)
    p["models"][name].update(keys)
    return p


def test_recipe_keys_are_optional_and_validated():
    p = copy.deepcopy(DEFAULT)  # params files written before these keys stay valid
    for m in p["models"].values():
        for key in ("ema_decay", "ema_power", "warmup_steps", "t_sampling", "t_logit_mean", "t_logit_std",
                "min_snr_gamma"):
            m.pop(key, None)
    validate(p)
    validate(with_model_keys("time_fm", ema_decay=0.999, warmup_steps=100, t_sampling="logit_normal",
                             t_logit_mean=0.0, t_logit_std=1.0))
    validate(with_model_keys("time_ddpm", min_snr_gamma=5.0))
    with pytest.raises(ParamsError, match=r"models\.time_fm\.t_sampling: got 'lognormal'.*did you mean 'logit_normal'"):
        validate(with_model_keys("time_fm", t_sampling="lognormal"))
    with pytest.raises(ParamsError, match=r"models\.time_fm\.ema_decay: got 1\.5"):
        validate(with_model_keys("time_fm", ema_decay=1.5))
    with pytest.raises(ParamsError, match=r"models\.time_fm\.min_snr_gamma: .*DDPM kinds only"):
        validate(with_model_keys("time_fm", min_snr_gamma=5.0))
    with pytest.raises(ParamsError, match=r"models\.time_ddpm\.t_sampling: .*flow-matching kinds"):
        validate(with_model_keys("time_ddpm", t_sampling="logit_normal"))


def test_captions_name_every_departure_from_the_spec_recipe():
    from difflab.figures.manifest import describe_training

    entry = dict(DEFAULT["models"]["time_fm"])
    for key in ("ema_decay", "ema_power", "warmup_steps", "t_sampling", "t_logit_mean", "t_logit_std",
                "min_snr_gamma"):
        entry.pop(key, None)
    plain = describe_training(entry)
    assert "warm-up" not in plain and "EMA" not in plain and "logit" not in plain
    tuned = describe_training({**entry, "warmup_steps": 250, "t_sampling": "logit_normal", "ema_decay": 0.999})
    assert tuned.startswith(plain) and tuned.endswith(
        ", lr warm-up over 250 steps, logit-normal t (mean 0, std 1), EMA of weights (decay min(0.999, (1+k)/(10+k)))")
    assert describe_training({**entry, "kind": "time_ddpm", "min_snr_gamma": 5.0}).endswith(", min-SNR-5 loss weights")


# ---------------------------------------------------------------- per-step lr decay

def lrs_of_a_run(tmp_path, monkeypatch, tag, **kw):
    """The lr of every optimizer step of a tiny run (48 images, batch 16: 3 steps an epoch), warm-up included."""
    from difflab.training import loop

    seen, real = [], loop._step

    def recording(opt, lr_scale):
        seen.append(opt.param_groups[0]["lr"] * lr_scale)
        real(opt, lr_scale)

    monkeypatch.setattr(loop, "_step", recording)
    x, y = tiny_data()
    train("m", cfg(**kw), x, y, outputs(tmp_path, tag))
    return seen


def test_per_step_lr_decay_reaches_the_same_tenth_as_per_epoch_and_composes_with_warm_up(tmp_path, monkeypatch):
    per_epoch = lrs_of_a_run(tmp_path, monkeypatch, "epoch", epochs=2)
    g = 0.1 ** (1 / 2)
    assert per_epoch == pytest.approx([1e-2] * 3 + [1e-2 * g] * 3, rel=1e-12)  # the spec's: after each epoch
    per_step = lrs_of_a_run(tmp_path, monkeypatch, "step", epochs=2, lr_decay_every="step")
    g = 0.1 ** (1 / 6)
    assert per_step == pytest.approx([1e-2 * g ** k for k in range(6)], rel=1e-12)
    one_epoch = lrs_of_a_run(tmp_path, monkeypatch, "one", epochs=1, lr_decay_every="step", warmup_steps=2)
    g = 0.1 ** (1 / 3)
    assert one_epoch == pytest.approx([1e-2 * 0.5, 1e-2 * g, 1e-2 * g ** 2], rel=1e-12)  # warm-up x decay
    assert lrs_of_a_run(tmp_path, monkeypatch, "none", epochs=1) == [1e-2] * 3  # per epoch: never acts in one


def test_interrupted_run_with_per_step_decay_and_power_ema_resumes_to_identical_bytes(tmp_path, monkeypatch):
    config = cfg(epochs=3, lr_decay_every="step", warmup_steps=2, ema_decay=0.99, ema_power=0.75)
    ref, run, checkpoint = interrupted_in_epoch_3_then_resumed(tmp_path, monkeypatch, config)
    assert checkpoint["sched"]["last_epoch"] == 6 and checkpoint["model"]["ema"]["updates"] == 6
    assert sha(run.model) == sha(ref.model)


# ---------------------------------------------------------------- power-law EMA warm-up

def test_power_ema_warm_up_is_k_diffusions():
    """d_k = min(decay, 1 - (1 + k)^-power): the first update copies the weights, then the average spans a growing
    fraction of the run (k-diffusion's EMAWarmup with inv_gamma 1)."""
    model = torch.nn.Linear(1, 1, bias=False)
    ema = EMA(model, decay=0.999, power=0.75)
    rates = []
    for k in range(1000):
        rates.append(ema.rate())
        ema.update(model)
    assert rates[0] == 0.0 and rates[1] == pytest.approx(1 - 2 ** -0.75)
    assert rates[9] == pytest.approx(1 - 10 ** -0.75) and rates[999] == pytest.approx(1 - 1000 ** -0.75)
    assert EMA(model, decay=0.5, power=0.75).rate() == 0.0
    capped = EMA(model, decay=0.9, power=2 / 3)
    capped.updates = 10 ** 6
    assert capped.rate() == 0.9
    with torch.no_grad():
        model.weight.fill_(3.0)
    fresh = EMA(torch.nn.Linear(1, 1, bias=False), decay=0.999, power=0.75)
    fresh.update(model)                      # d = 0: the average is the weights
    assert fresh.model.weight.item() == 3.0
    assert EMA(model, decay=0.999).rate() == pytest.approx(0.1)  # without power: (1 + k) / (10 + k)


# ---------------------------------------------------------------- v-prediction

def test_v_prediction_loss_and_its_min_snr_weights():
    x, y = tiny_data(8)
    s = NoiseSchedule.linear(300, zero_terminal_snr=True)

    def zero_model(xt, t, c):
        return torch.zeros_like(xt)

    value = families.make_family("time_ddpm", s, prediction="v").loss(zero_model, x, y,
                                                                     torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 300, (8,), generator=g)
    eps = torch.randn(x.shape, generator=g)
    abar = s.alphas_cumprod[t].view(-1, 1, 1, 1)
    v = abar.sqrt() * eps - (1 - abar).sqrt() * x
    assert value.item() == pytest.approx(v.pow(2).mean().item(), rel=1e-5)
    weighted = families.make_family("time_ddpm", s, prediction="v", min_snr_gamma=5.0).loss(
        zero_model, x, y, torch.Generator().manual_seed(5))
    snr = abar.view(-1).double() / (1 - abar.view(-1).double())
    w = (snr.clamp(max=5.0) / (snr + 1)).float()
    assert weighted.item() == pytest.approx((w * v.pow(2).flatten(1).mean(1)).mean().item(), rel=1e-5)
    ends = families.min_snr_weight(s, torch.tensor([0, 299]), 5.0, "v")
    assert torch.isfinite(ends).all() and ends[1] == 0  # zero SNR: finite, and no weight at pure noise


def test_captions_name_the_new_options():
    from difflab.figures.manifest import describe_training

    no_ema = {k: v for k, v in DEFAULT["models"]["time_ddpm"].items() if k not in ("ema_decay", "ema_power")}
    entry = {**no_ema, "lr_decay": True, "lr_decay_every": "step", "prediction": "v"}
    text = describe_training(entry)
    assert "(x 0.1 over the run, decayed every step)" in text and text.endswith(", v-prediction")
    ema = describe_training({**DEFAULT["models"]["time_fm"], "ema_decay": 0.999, "ema_power": 0.75})
    assert "EMA of weights (decay min(0.999, 1-(1+k)^-0.75))" in ema
