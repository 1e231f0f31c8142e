"""The Part B model families, each one small unit: what it trains the UNet to predict (its loss), the time input it
feeds the UNet, and how a time-only UNet takes that time (its conditioning rule). Class conditioning is shared: a
one-hot class vector, dropped to zeros with probability p_uncond for classifier-free guidance, enters as c * h + t.

`make_family(kind, ...)` builds the family of a params kind; `build_model(kind, hidden)` its UNet. Sampling a family
lives in difflab.sampling (keyed by family), so that a sampler edit never invalidates twelve minutes of training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from difflab.core.schedule import NoiseSchedule, flow_interpolate
from difflab.core.unet import UNet, one_hot
from difflab.pipeline.params import PREDICTIONS, T_SAMPLINGS, Kind


class Family:
    """What every family shares: the kind, the UNet it trains and the class dropout for CFG."""

    modulation = "add"  # how a time-only UNet takes its time embedding: h + t (the DDPM page) or h * t (flow page)

    def __init__(self, kind: Kind | str, p_uncond: float = 0.1):
        self.kind, self.p_uncond = Kind.parse(kind), p_uncond

    def build(self, hidden: int) -> UNet:
        return build_model(self.kind, hidden)

    def loss(self, model: UNet, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Mean-squared loss of one batch; randomness comes only from `gen` (class dropout first), so runs repeat."""
        c = None
        if self.kind.class_conditional:
            c = one_hot(y, torch.rand(len(x), generator=gen, device=x.device) < self.p_uncond)
        return self._loss(model, x, c, gen)

    def _loss(self, model: UNet, x: torch.Tensor, c: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


def _randn_like(a: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(a.shape, generator=gen, device=a.device, dtype=a.dtype)


class Denoiser(Family):
    """The single-step denoiser (B.1): z = x + sigma eps, predict x."""

    def __init__(self, kind: Kind | str, p_uncond: float = 0.1, sigma: float = 0.5):
        super().__init__(kind, p_uncond)
        self.sigma = sigma

    def _loss(self, model, x, c, gen):
        return F.mse_loss(model(x + self.sigma * _randn_like(x, gen)), x)


class PureNoise(Family):
    """Denoising pure noise (B.1.2.3): z = eps, predict x; under an MSE loss it learns the mean image."""

    def _loss(self, model, x, c, gen):
        return F.mse_loss(model(_randn_like(x, gen)), x)


class DDPM(Family):
    """Epsilon prediction (B.2): x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps with t ~ U{0..T-1}, predict eps, or
    with prediction "v" (not in the spec; Salimans & Ho 2022) predict `v_target`, which stays defined on a
    zero-terminal-SNR schedule. The UNet sees t as (t + 1) / T, in (0, 1]. With min_snr_gamma > 0 each image's
    loss is weighted by `min_snr_weight`."""

    def __init__(self, kind: Kind | str, schedule: NoiseSchedule, p_uncond: float = 0.1, min_snr_gamma: float = 0.0,
                 prediction: str = "eps"):
        super().__init__(kind, p_uncond)
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")
        self.schedule, self.min_snr_gamma, self.prediction = schedule, min_snr_gamma, prediction

    def build(self, hidden: int) -> UNet:
        return build_model(self.kind, hidden, self.prediction)

    def time_input(self, t: torch.Tensor) -> torch.Tensor:
        return (t + 1) / self.schedule.num_ts

    def _loss(self, model, x, c, gen):
        t = torch.randint(0, self.schedule.num_ts, (len(x),), generator=gen, device=x.device)
        eps = _randn_like(x, gen)
        pred = model(self.schedule.forward(x, t, eps), self.time_input(t), c)
        target = eps if self.prediction == "eps" else v_target(self.schedule, x, t, eps)
        if self.min_snr_gamma > 0:
            per_image = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
            return (min_snr_weight(self.schedule, t, self.min_snr_gamma, self.prediction) * per_image).mean()
        return F.mse_loss(pred, target)


def v_target(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The v-prediction target (Salimans & Ho 2022, diffusers' get_velocity): sqrt(abar_t) eps - sqrt(1 - abar_t) x0;
    at abar = 0 it is -x0."""
    abar = schedule.abar(t, x0)
    return abar.sqrt() * eps - (1 - abar).sqrt() * x0


def min_snr_weight(schedule: NoiseSchedule, t: torch.Tensor, gamma: float, prediction: str = "eps") -> torch.Tensor:
    """Min-SNR-gamma loss weight (Hang et al. 2023) with SNR_t = abar_t / (1 - abar_t): min(SNR_t, gamma) / SNR_t
    for eps-prediction, min(SNR_t, gamma) / (SNR_t + 1) for v-prediction (the same weight on the x0 error); it
    caps how much the nearly clean timesteps count."""
    abar = schedule.alphas_cumprod.to(t.device)[t].double()
    snr = abar / (1 - abar)
    return (snr.clamp(max=gamma) / (snr if prediction == "eps" else snr + 1)).float()


class FlowMatching(Family):
    """Flow matching (the flow page): x_t = (1 - t) x0 + t x1 from noise x0 to data x1, predict the velocity
    x1 - x0; t ~ U[0, 1] (the spec's) or logit-normal (`sample_flow_t`). The UNet sees t itself; a time-only UNet
    multiplies by it."""

    modulation = "mul"

    def __init__(self, kind: Kind | str, p_uncond: float = 0.1, t_sampling: str = "uniform",
                 t_logit_mean: float = 0.0, t_logit_std: float = 1.0):
        super().__init__(kind, p_uncond)
        self.t_sampling, self.t_logit_mean, self.t_logit_std = t_sampling, t_logit_mean, t_logit_std

    def time_input(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def _loss(self, model, x, c, gen):
        t = sample_flow_t(len(x), gen, x.device, self.t_sampling, self.t_logit_mean, self.t_logit_std)
        noise = _randn_like(x, gen)
        return F.mse_loss(model(flow_interpolate(noise, x, t), self.time_input(t), c), x - noise)


def sample_flow_t(n: int, gen: torch.Generator, device: torch.device, sampling: str = "uniform",
                  logit_mean: float = 0.0, logit_std: float = 1.0) -> torch.Tensor:
    """Flow-matching times: U[0, 1] (the spec's), or logit-normal t = sigmoid(N(logit_mean, logit_std^2)) as in
    SD3 / minRF, which trains the middle of the path more often (here t = 1 is the data end, so logit_mean > 0
    leans toward clean images)."""
    if sampling == "uniform":
        return torch.rand(n, generator=gen, device=device)
    if sampling == "logit_normal":
        return torch.sigmoid(logit_mean + logit_std * torch.randn(n, generator=gen, device=device))
    raise ValueError(f"unknown t sampling {sampling!r}; expected one of {T_SAMPLINGS}")


FAMILIES: dict[str, type[Family]] = {"denoiser": Denoiser, "pure_noise": PureNoise, "ddpm": DDPM,
                                     "flow": FlowMatching}


def build_model(kind: Kind | str, hidden: int, prediction: str = "eps") -> UNet:
    """The spec's UNet for a kind: no conditioning for the denoisers; a time-only UNet takes t as its family says;
    class-conditioned UNets of both families take c * h + t. `prediction` (DDPM kinds: eps or v) is what its output
    means, recorded in its model file for the samplers."""
    kind = Kind.parse(kind)
    if prediction not in PREDICTIONS or (prediction != "eps" and kind.family != "ddpm"):
        raise ValueError(f"prediction {prediction!r} for a {kind.name} model; expected one of {PREDICTIONS}, and "
                         "'v' only for DDPM kinds")
    return UNet(hidden, kind.conditioning, FAMILIES[kind.family].modulation, prediction)


def make_family(kind: Kind | str, schedule: NoiseSchedule | None = None, *, p_uncond: float = 0.1,
                sigma: float = 0.5, t_sampling: str = "uniform", t_logit_mean: float = 0.0, t_logit_std: float = 1.0,
                min_snr_gamma: float = 0.0, prediction: str = "eps") -> Family:
    """The family of `kind` with its options (each family takes its own; the defaults are the spec's recipe)."""
    kind = Kind.parse(kind)
    if kind.family == "denoiser":
        return Denoiser(kind, p_uncond, sigma)
    if kind.family == "pure_noise":
        return PureNoise(kind, p_uncond)
    if kind.family == "ddpm":
        if schedule is None:
            raise ValueError(f"{kind.name} needs the DDPM noise schedule")
        return DDPM(kind, schedule, p_uncond, min_snr_gamma, prediction)
    return FlowMatching(kind, p_uncond, t_sampling, t_logit_mean, t_logit_std)

