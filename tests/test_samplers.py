"""Schedule math and samplers checked against closed forms and diffusers."""
import pytest
import torch
from torch import nn

from difflab.core import families
from difflab.core.families import DDPM, Denoiser, FlowMatching, build_model
from difflab.core.reverse import ancestral_step, predicted_eps, predicted_x0, step_variance, x0_from_eps
from difflab.core.schedule import NoiseSchedule, flow_interpolate
from difflab.core.unet import one_hot
from difflab.sampling.choice import SamplerChoice
from difflab.sampling.samplers import (
    generate,
    generate_in_batches,
    sample_ddpm,
    sample_flow,
    trailing_timesteps,
    with_cfg,
)

pytestmark = pytest.mark.unit


class PointMassEps(nn.Module):
    """The exact eps-predictor when all data is one image x*: eps = (x_t - sqrt(abar) x*) / sqrt(1 - abar); its
    time input is a DDPM's (t + 1) / T."""

    def __init__(self, target, schedule):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.target, self.s = target, schedule

    def forward(self, x, t, c=None):
        steps = (t * self.s.num_ts).round().long() - 1
        abar = self.s.alphas_cumprod[steps].view(-1, 1, 1, 1)
        return (x - abar.sqrt() * self.target) / (1 - abar).sqrt()


class PointMassVelocity(nn.Module):
    """The exact flow velocity toward one image x*: v = (x* - x_t) / (1 - t)."""

    def __init__(self, target):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.target = target

    def forward(self, x, t, c=None):
        return (self.target - x) / (1 - t).view(-1, 1, 1, 1)


def test_forward_and_inverse():
    s = NoiseSchedule.linear(300, 1e-4, 0.02)
    assert len(s.alphas_cumprod) == len(s.betas) == 300 and s.alphas_cumprod[0] == 1 - 1e-4
    assert torch.allclose(s.betas, torch.linspace(1e-4, 0.02, 300))
    assert s.abar(-1, torch.zeros(1)) == 1, "t = -1 is the clean image"
    x0, eps, t = torch.rand(4, 1, 28, 28), torch.randn(4, 1, 28, 28), torch.tensor([0, 49, 149, 299])
    xt = s.forward(x0, t, eps)
    abar = s.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(xt, abar.sqrt() * x0 + (1 - abar).sqrt() * eps)
    assert torch.allclose(x0_from_eps(s, xt, t, eps), x0, atol=1e-4)


# sample.ddpm_variance and diffusers' DDPMScheduler variance_type for the same noise
VARIANCE_TYPES = {"beta": "fixed_large", "posterior": "fixed_small"}


@pytest.mark.parametrize("variance", VARIANCE_TYPES)
def test_ancestral_step_equals_diffusers_ddpm_step(variance):
    """Our step with sigma^2 = beta_t (the spec's) is diffusers' "fixed_large", with beta_tilde_t its "fixed_small";
    at t = 0, the step to the clean image, neither adds noise."""
    from diffusers import DDPMScheduler
    s = NoiseSchedule.linear(300, 1e-4, 0.02)
    ref = DDPMScheduler(num_train_timesteps=300, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                        clip_sample=False, variance_type=VARIANCE_TYPES[variance], thresholding=False)
    xt, eps = torch.randn(2, 1, 28, 28), torch.randn(2, 1, 28, 28)
    for t in (299, 149, 1, 0):
        noise = torch.randn(xt.shape, generator=torch.Generator().manual_seed(t))
        tt, t_prev = torch.full((2,), t), torch.full((2,), t - 1)
        ours = ancestral_step(s, xt, tt, t_prev, x0_from_eps(s, xt, tt, eps), noise,
                              step_variance(s, tt, t_prev, xt, variance))
        theirs = ref.step(eps, t, xt, generator=torch.Generator().manual_seed(t)).prev_sample
        assert torch.allclose(ours, theirs, rtol=1e-3, atol=1e-4), t
    assert step_variance(s, 5, 4, xt, "beta") == pytest.approx(s.betas[5].item(), rel=1e-3)  # 1 - abar ratio, fp32
    assert step_variance(s, 0, -1, xt, "beta") == 0 and step_variance(s, 0, -1, xt, "posterior") == 0
    with pytest.raises(ValueError, match="unknown DDPM variance 'large'"):
        step_variance(s, 5, 4, xt, "large")


def diffusers_ddpm_chain(model, s, timesteps, variance_type, prediction="eps", seed=0):
    """diffusers' DDPMScheduler loop on `timesteps` (our betas) from the noise of `seed`: the x the model saw at
    each step, and the final x (clamped as our samplers return it)."""
    from diffusers import DDPMScheduler
    ref = DDPMScheduler(num_train_timesteps=s.num_ts, trained_betas=s.betas.double().numpy(), clip_sample=False,
                        variance_type=variance_type,
                        prediction_type="epsilon" if prediction == "eps" else "v_prediction",
                        rescale_betas_zero_snr=s.zero_terminal_snr)
    ref.set_timesteps(timesteps=timesteps)
    gen = torch.Generator().manual_seed(seed)
    y, seen = torch.randn((2, 1, 28, 28), generator=gen), []
    for td in timesteps:
        seen.append(y)
        y = ref.step(model(y, torch.full((2,), td + 1.0) / s.num_ts), td, y, generator=gen).prev_sample
    return seen, y.clamp(0, 1)


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("variance", VARIANCE_TYPES)
def test_full_ancestral_chain_equals_diffusers_ddpm_with_each_variance(variance, prediction):
    """The whole 300-step chain of an inexact model, eps and v (on a zero-terminal-SNR schedule), is diffusers'
    DDPMScheduler loop with the matching variance_type, step by step, from the same noise."""
    s = NoiseSchedule.linear(300, zero_terminal_snr=prediction == "v")
    target = torch.rand(1, 1, 28, 28)
    inner = PointMassEps(target, s) if prediction == "eps" else PointMassV(target, s)
    model = Recording(lambda_module(lambda x, td: inner(x, torch.full((2,), td + 1.0) / 300) + 0.1 * x))
    model.inner.s, model.prediction = s, prediction
    ours, _ = sample_ddpm(model, DDPM("time_ddpm", s), 2, torch.Generator().manual_seed(0), variance=variance)
    seen, theirs = diffusers_ddpm_chain(model.inner, s, list(range(299, -1, -1)), VARIANCE_TYPES[variance],
                                        prediction)
    for (t, x), y in zip(model.calls, seen):
        torch.testing.assert_close(x, y, rtol=0, atol=2e-4, msg=f"t = {t}")
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-4)


@pytest.mark.parametrize("variance", VARIANCE_TYPES)
def test_strided_ancestral_steps_take_the_strides_beta_and_no_noise_on_the_last(variance):
    """On 10 trailing steps every step is diffusers' with its variance (the step's beta is 1 - abar_t / abar_prev);
    the last step, to the clean image, adds no noise with either variance (diffusers' "fixed_large" would add
    sqrt(1 - abar_29) z there), so it ends on the posterior mean, which is diffusers' "fixed_small" step."""
    from diffusers import DDPMScheduler
    s = NoiseSchedule.linear(300)
    inner = PointMassEps(torch.rand(1, 1, 28, 28), s)
    model = Recording(lambda_module(lambda x, td: inner(x, torch.full((2,), td + 1.0) / 300) + 0.1 * x))
    model.inner.s = s
    grid = trailing_timesteps(300, 10)
    ours, _ = sample_ddpm(model, DDPM("time_ddpm", s), 2, torch.Generator().manual_seed(0), steps=10,
                          variance=variance)
    seen, _ = diffusers_ddpm_chain(model.inner, s, grid, VARIANCE_TYPES[variance])
    assert [t for t, _ in model.calls] == grid
    for (t, x), y in zip(model.calls, seen):
        torch.testing.assert_close(x, y, rtol=0, atol=2e-4, msg=f"t = {t}")
    last = DDPMScheduler(num_train_timesteps=300, trained_betas=s.betas.double().numpy(), clip_sample=False,
                         variance_type="fixed_small")
    last.set_timesteps(timesteps=grid)
    x_last = model.calls[-1][1]
    mean = last.step(model.inner(x_last, torch.full((2,), grid[-1] + 1.0) / 300), grid[-1], x_last,
                     generator=torch.Generator().manual_seed(1)).prev_sample
    torch.testing.assert_close(ours, mean.clamp(0, 1), rtol=0, atol=1e-4)


class Recording(nn.Module):
    """Wraps an eps-model and records, per call, the timestep t (the UNet gets (t + 1) / T) and the x it got."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x, t, c=None):
        self.calls.append((int((t[0] * self.inner.s.num_ts).round()) - 1, x.clone()))
        return self.inner(x, t, c)


@pytest.mark.parametrize("sampler,steps", [("ddpm", 0), ("ddim", 20), ("dpmsolver", 10), ("ddpm", 50),
                                           ("ddpm", 7), ("ddim", 7)])
def test_ddpm_samplers_recover_a_point_mass(sampler, steps):
    s = NoiseSchedule.linear(100, 1e-4, 0.05)
    target = torch.rand(1, 1, 28, 28) * 0.8 + 0.1
    out, frames = sample_ddpm(PointMassEps(target, s), DDPM("time_ddpm", s), 3, torch.Generator().manual_seed(0),
                              sampler=sampler, steps=steps, frame_every=10)
    assert torch.allclose(out, target.expand(3, -1, -1, -1), atol=2e-3)
    assert len(frames) >= 2 and torch.allclose(frames[-1], out)


def diffusers_grid(steps, spacing="trailing"):
    from diffusers import DDPMScheduler
    scheduler = DDPMScheduler(num_train_timesteps=300, timestep_spacing=spacing)
    scheduler.set_timesteps(steps)
    return scheduler.timesteps.tolist()


def test_trailing_timesteps_are_diffusers_without_its_stray_last_step():
    for steps in (1, 6, 10, 20, 50, 150, 300):
        assert trailing_timesteps(300, steps) == diffusers_grid(steps)
    for steps in (7, 14, 55, 291):  # diffusers' float arange yields steps + 1 timesteps there, the last -1
        assert diffusers_grid(steps)[-1] == -1 and trailing_timesteps(300, steps) == diffusers_grid(steps)[:-1]
    for steps in range(1, 301):
        grid = trailing_timesteps(300, steps)
        assert len(set(grid)) == steps and grid[0] == 299 and grid == sorted(grid, reverse=True) and grid[-1] >= 0
    with pytest.raises(ValueError, match="steps must be in"):
        trailing_timesteps(300, 301)


@pytest.mark.parametrize("sampler,steps", [("ddpm", 50), ("ddpm", 7), ("dpmsolver", 7), ("ddim", 14)])
def test_strided_samplers_use_trailing_spacing_starting_at_T(sampler, steps):
    """With fewer steps than T a sampler starts from pure noise at t = T - 1 = 299 and calls the model
    `steps` times on the "trailing" grid, not on diffusers' default "leading" one (which starts at 294 for 50)."""
    s = NoiseSchedule.linear(300)
    model = Recording(PointMassEps(torch.rand(1, 1, 28, 28), s))
    sample_ddpm(model, DDPM("time_ddpm", s), 1, torch.Generator().manual_seed(0), sampler=sampler, steps=steps)
    seen = [t for t, _ in model.calls]
    assert seen[0] == 299 and seen == trailing_timesteps(300, steps)
    assert seen != diffusers_grid(steps, "leading")


@pytest.mark.parametrize("steps", [7, 40, 12])
def test_ddim_steps_to_the_next_trailing_timestep(steps):
    """DDIM with an exact eps-model keeps its eps estimate, so after the first step x stays on the forward path: at
    every later call with timestep t the model must see sqrt(abar_t) x* + sqrt(1 - abar_t) eps. diffusers'
    DDIMScheduler steps to t - T // steps instead of the next trailing timestep when steps does not divide T
    (7, 40), and then the model sees the x of another t."""
    s = NoiseSchedule.linear(300)
    target = torch.rand(1, 1, 28, 28) * 0.8 + 0.1
    model = Recording(PointMassEps(target, s))
    out, _ = sample_ddpm(model, DDPM("time_ddpm", s), 2, torch.Generator().manual_seed(0), sampler="ddim",
                         steps=steps)
    assert len(model.calls) == steps and model.calls[0][0] == 299
    eps = model.inner(model.calls[0][1], torch.full((2,), 1.0))  # the first (and every) eps estimate
    for t, x in model.calls[1:]:
        abar = s.alphas_cumprod[t]
        torch.testing.assert_close(x, abar.sqrt() * target + (1 - abar).sqrt() * eps, rtol=0, atol=2e-4)
    torch.testing.assert_close(out, target.expand(2, -1, -1, -1), rtol=0, atol=2e-4)


def test_ddim_equals_diffusers_when_steps_divide_T():
    from diffusers import DDIMScheduler
    s = NoiseSchedule.linear(300)
    model = PointMassEps(torch.rand(1, 1, 28, 28), s)
    model_t = lambda x, td: model(x, torch.full((2,), td + 1) / 300) + 0.1 * x  # noqa: E731 (an inexact model)
    ours, _ = sample_ddpm(lambda_module(model_t), DDPM("time_ddpm", s), 2, torch.Generator().manual_seed(0),
                          sampler="ddim", steps=10)
    ref = DDIMScheduler(num_train_timesteps=300, trained_betas=s.betas.double().numpy(), clip_sample=False,
                        set_alpha_to_one=True, timestep_spacing="trailing")
    ref.set_timesteps(10)
    y = torch.randn((2, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    for td in ref.timesteps:
        y = ref.step(model_t(y, int(td)), td, y).prev_sample
    torch.testing.assert_close(ours, y.clamp(0, 1), rtol=0, atol=1e-4)


def lambda_module(fn):
    """An nn.Module whose forward(x, t) is fn(x, diffusers timestep)."""
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x, t, c=None):
            return fn(x, int((t[0] * 300).round()) - 1)
    return M()


def test_cfg_combines_in_fp32_under_bf16_autocast():
    """The UNet runs in bf16 under autocast; the guided estimate out_u + gamma (out_c - out_u) is formed in fp32
    from those bf16 outputs, not rounded to bf16 again (at gamma = 5 that would amplify the rounding)."""
    torch.manual_seed(0)
    model = build_model("class_fm", 8).eval()
    labels, gamma = torch.tensor([1, 7, 3]), 5.0
    x, t = torch.randn(3, 1, 28, 28), torch.full((3,), 0.3)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = with_cfg(model, labels, gamma)(x, t)
        raw = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([one_hot(labels), torch.zeros(3, 10)]))
    assert raw.dtype == torch.bfloat16, "the UNet should have run in bf16"
    out_c, out_u = raw.float().chunk(2)
    assert out.dtype == torch.float32
    assert torch.equal(out, out_u + gamma * (out_c - out_u))
    bf_c, bf_u = raw.chunk(2)
    assert not torch.equal(out, (bf_u + gamma * (bf_c - bf_u)).float()), "bf16 combination rounds differently"


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_flow_samplers_recover_a_point_mass(sampler):
    target = torch.rand(1, 1, 28, 28)
    out, _ = sample_flow(PointMassVelocity(target), 2, torch.Generator().manual_seed(0), sampler=sampler, steps=8)
    assert torch.allclose(out, target.expand(2, -1, -1, -1), atol=1e-5)


def test_flow_interpolation_endpoints():
    noise, data = torch.randn(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    assert torch.equal(flow_interpolate(noise, data, torch.zeros(2)), noise)
    assert torch.equal(flow_interpolate(noise, data, torch.ones(2)), data)


class Toy(nn.Module):
    """A class model whose output is x + the digit, or x + 10 for the unconditional row; records rows per call."""

    def __init__(self, calls):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.calls = calls

    def forward(self, x, t, c):
        self.calls.append(x.shape[0])
        return x + c.argmax(1).float().view(-1, 1, 1, 1) + 10 * (c.sum(1) == 0).float().view(-1, 1, 1, 1)


def test_cfg_is_one_batched_forward_with_the_spec_formula():
    calls = []
    f = with_cfg(Toy(calls), torch.tensor([2, 5]), gamma=3.0)
    x = torch.zeros(2, 1, 2, 2)
    out = f(x, torch.zeros(2))
    assert calls == [4]
    uncond, cond = 10.0, torch.tensor([2.0, 5.0]).view(-1, 1, 1, 1)
    assert torch.allclose(out, uncond + 3.0 * (cond - uncond))


def test_generate_uses_the_family_choice_and_rejects_unknown_samplers():
    s = NoiseSchedule.linear(10)
    target = torch.rand(1, 1, 28, 28)
    ddpm, flow = DDPM("time_ddpm", s), FlowMatching("time_fm")
    choice = SamplerChoice(ddpm_sampler="ddim", ddpm_steps=5, flow_sampler="heun", flow_steps=4)
    out, frames = generate(PointMassEps(target, s), ddpm, 2, torch.Generator(), choice=choice, frame_every=1)
    assert len(frames) == 5 and torch.allclose(out, target.expand(2, -1, -1, -1), atol=2e-3)
    out, frames = generate(PointMassVelocity(target), flow, 2, torch.Generator(), choice=choice, frame_every=1)
    assert len(frames) == 4
    assert choice.describe("ddpm") == "DDIM sampling, 5 steps"
    with pytest.raises(ValueError, match="unknown DDPM sampler"):
        generate(PointMassEps(target, s), ddpm, 1, torch.Generator(), choice=SamplerChoice(ddpm_sampler="euler"))
    with pytest.raises(ValueError, match="unknown flow sampler"):
        generate(PointMassVelocity(target), flow, 1, torch.Generator(), choice=SamplerChoice(flow_sampler="ddim"))
    with pytest.raises(ValueError, match="not a generative family"):
        generate(PointMassVelocity(target), Denoiser("denoiser"), 1, torch.Generator())


def test_sampling_gifs_get_about_thirty_frames_whatever_the_step_count():
    assert SamplerChoice(ddpm_sampler="ddpm", ddpm_steps=0).frame_every("ddpm", 300) == 10
    assert SamplerChoice(ddpm_sampler="dpmsolver", ddpm_steps=20).frame_every("ddpm", 300) == 1
    assert SamplerChoice(flow_sampler="euler", flow_steps=90).frame_every("flow") == 3
    heun = SamplerChoice(flow_sampler="heun", flow_steps=10)
    assert heun.describe("flow") == "Heun integration of the flow, 10 steps"


def test_the_ancestral_variance_is_the_specs_unless_chosen_and_captions_name_it():
    sample = {"ddpm_sampler": "ddpm", "ddpm_steps": 0, "flow_sampler": "euler", "flow_steps": 5}
    assert SamplerChoice.from_params(sample).ddpm_variance == "beta"
    assert SamplerChoice.from_params(sample).describe("ddpm", 300) == "DDPM ancestral sampling (σ² = β_t), 300 steps"
    posterior = SamplerChoice.from_params({**sample, "ddpm_variance": "posterior", "ddpm_steps": 50})
    assert posterior.describe("ddpm", 300) == "DDPM ancestral sampling (σ² = β̃_t, the posterior variance), 50 steps"
    assert SamplerChoice("dpmsolver", 10, ddpm_variance="posterior").describe("ddpm") == "DPM-Solver++ sampling, 10 steps"
    s = NoiseSchedule.linear(20)
    model, family = PointMassEps(torch.rand(1, 1, 28, 28), s), DDPM("time_ddpm", s)
    draws = {v: generate(model, family, 2, torch.Generator().manual_seed(0), choice=SamplerChoice(ddpm_variance=v),
                         frame_every=1)[1][0] for v in ("beta", "posterior")}  # after the first step
    for v, frame in draws.items():
        assert torch.equal(frame, sample_ddpm(model, family, 2, torch.Generator().manual_seed(0), variance=v,
                                              frame_every=1)[1][0])
    assert not torch.equal(draws["beta"], draws["posterior"])


def test_part_a_at_stride_one_is_part_b_ancestral_sampling_bit_for_bit(tmp_path):
    """One timestep convention: Part A's loop on the MNIST backbone, over every timestep (stride 1) with CFG, and
    Part B's full DDPM chain on the same class_ddpm model and seed produce the same bytes; both step with
    NoiseSchedule.step and feed the UNet the DDPM family's time input."""
    from part_a_fixtures import tiny_mnist_backbone

    from difflab.part_a import loops as pa
    from difflab.pipeline.runtime import generator

    T, gamma, labels = 12, 3.0, torch.tensor([3, 8])
    backbone = tiny_mnist_backbone(tmp_path, T)
    cond, uncond = backbone.embed(["3", "8"]), backbone.embed(["", ""])
    part_a = pa.sample(backbone, 2, pa.strided_timesteps(T, 1), pa.cfg_noise(backbone, cond, uncond, gamma),
                       generator(torch.device("cpu"), 7), to_clean=True)
    part_b, _ = sample_ddpm(backbone.model, backbone.family, 2, generator(torch.device("cpu"), 7), labels=labels,
                            gamma=gamma, variance="posterior")  # Part A's MNIST backbone steps with beta_tilde
    assert torch.equal(backbone.decode(part_a), part_b)


# ---------------------------------------------------------------- zero terminal SNR and v-prediction

class PointMassV(nn.Module):
    """The exact v-predictor when all data is one image x*: v = sqrt(abar) eps - sqrt(1 - abar) x* with eps from
    x_t, i.e. (sqrt(abar) x_t - x*) / sqrt(1 - abar); -x* at abar = 0. `prediction` tells the samplers."""

    prediction = "v"

    def __init__(self, target, schedule, sloppy=0.0):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.target, self.s, self.sloppy = target, schedule, sloppy

    def forward(self, x, t, c=None):
        steps = (t * self.s.num_ts).round().long() - 1
        abar = self.s.alphas_cumprod[steps].view(-1, 1, 1, 1)
        return (abar.sqrt() * x - self.target) / (1 - abar).sqrt() + self.sloppy * x  # sloppy: an inexact model


def test_zero_terminal_snr_betas_are_diffusers_rescale_zero_terminal_snr():
    """Lin et al. Alg. 1 as diffusers computes it (in float64 here, then float32): abar_{T-1} = 0 exactly, abar_0 as
    before, the last beta 1; the spec's schedule is unchanged without the option."""
    from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr

    plain, zero = NoiseSchedule.linear(300), NoiseSchedule.linear(300, zero_terminal_snr=True)
    theirs = rescale_zero_terminal_snr(torch.linspace(1e-4, 0.02, 300, dtype=torch.float64))
    assert torch.equal(zero.betas, theirs.float())
    assert torch.equal(zero.alphas_cumprod, torch.cumprod(1 - theirs, 0).float())
    assert zero.alphas_cumprod[-1] == 0 and zero.betas[-1] == 1 and zero.zero_terminal_snr
    assert zero.alphas_cumprod[0] == pytest.approx(plain.alphas_cumprod[0].item(), abs=1e-7)
    assert not plain.zero_terminal_snr and plain.alphas_cumprod[-1].sqrt() == pytest.approx(0.22, abs=0.01)
    assert (zero.alphas_cumprod.diff() < 0).all()
    f32 = rescale_zero_terminal_snr(torch.linspace(1e-4, 0.02, 300))  # diffusers' own float32 arithmetic
    torch.testing.assert_close(zero.betas, f32, rtol=0, atol=2e-6)


def test_v_model_x0_and_eps_invert_the_forward_process():
    s = NoiseSchedule.linear(300, zero_terminal_snr=True)
    x0, eps, t = torch.rand(4, 1, 28, 28), torch.randn(4, 1, 28, 28), torch.tensor([0, 100, 298, 299])
    v = families.v_target(s, x0, t, eps)
    xt = s.forward(x0, t, eps)
    torch.testing.assert_close(predicted_x0(s, xt, t, v, "v"), x0, rtol=0, atol=1e-5)
    torch.testing.assert_close(predicted_eps(s, xt, t, v, "v"), eps, rtol=0, atol=1e-5)
    assert torch.equal(v[3], -x0[3]), "at zero SNR v = -x0"
    with pytest.raises(ValueError, match="abar_t = 0"):
        x0_from_eps(s, xt, t, eps)  # an eps estimate holds no x0 at the last timestep
    x0_from_eps(s, xt[:3], t[:3], eps[:3])


def zero_snr_reference(cls, **kw):
    """A diffusers scheduler configured the diffusers way: linear betas, rescale_betas_zero_snr, v-prediction."""
    return cls(num_train_timesteps=300, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
               rescale_betas_zero_snr=True, prediction_type="v_prediction", **kw)


def test_v_model_ancestral_step_equals_diffusers_ddpm_step_at_zero_terminal_snr():
    from diffusers import DDPMScheduler
    s = NoiseSchedule.linear(300, zero_terminal_snr=True)
    ref = zero_snr_reference(DDPMScheduler, clip_sample=False, variance_type="fixed_small", thresholding=False)
    xt, v = torch.randn(2, 1, 28, 28), torch.randn(2, 1, 28, 28)
    for t in (299, 298, 149, 1, 0):  # 299: abar = 0, the first step from pure noise
        noise = torch.randn(xt.shape, generator=torch.Generator().manual_seed(t))
        tt = torch.full((2,), t)
        ours = ancestral_step(s, xt, tt, torch.full((2,), t - 1), predicted_x0(s, xt, tt, v, "v"), noise)
        theirs = ref.step(v, t, xt, generator=torch.Generator().manual_seed(t)).prev_sample
        assert torch.isfinite(ours).all()
        assert torch.allclose(ours, theirs, rtol=1e-3, atol=1e-4), t  # float32 schedules: theirs, ours via float64


def test_v_model_ddim_equals_diffusers_ddim_at_zero_terminal_snr():
    from diffusers import DDIMScheduler
    s = NoiseSchedule.linear(300, zero_terminal_snr=True)
    model = Recording(PointMassV(torch.rand(1, 1, 28, 28), s, sloppy=0.1))
    model.prediction = "v"
    ours, _ = sample_ddpm(model, DDPM("time_ddpm", s), 2, torch.Generator().manual_seed(0), sampler="ddim",
                          steps=10)
    assert model.calls[0][0] == 299, "DDIM starts at t = T - 1, pure noise on this schedule"
    ref = zero_snr_reference(DDIMScheduler, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    ref.set_timesteps(10)
    y = torch.randn((2, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    for td in ref.timesteps:
        y = ref.step(model.inner(y, torch.full((2,), int(td) + 1.0) / 300), td, y).prev_sample
    torch.testing.assert_close(ours, y.clamp(0, 1), rtol=0, atol=1e-4)


@pytest.mark.parametrize("sampler", ["dpmsolver", "dpmsolver_sde"])
def test_v_model_dpm_solver_equals_diffusers_at_zero_terminal_snr(sampler):
    """diffusers' DPM-Solver++ on a zero-SNR schedule sets abar_{T-1} = 2^-24 (a finite first sigma); ours is the
    same scheduler told the same, so the samples agree with one configured from linear betas."""
    from diffusers import DPMSolverMultistepScheduler
    s = NoiseSchedule.linear(300, zero_terminal_snr=True)
    model = PointMassV(torch.rand(1, 1, 28, 28), s, sloppy=0.1)
    ours, _ = sample_ddpm(model, DDPM("time_ddpm", s), 2, torch.Generator().manual_seed(0), sampler=sampler,
                          steps=10)
    ref = zero_snr_reference(DPMSolverMultistepScheduler, solver_order=2, timestep_spacing="trailing",
                             algorithm_type="dpmsolver++" if sampler == "dpmsolver" else "sde-dpmsolver++",
                             final_sigmas_type="zero")
    assert ref.alphas_cumprod[-1] == 2 ** -24
    ref.set_timesteps(10)
    gen = torch.Generator().manual_seed(0)
    y = torch.randn((2, 1, 28, 28), generator=gen)
    for td in ref.timesteps:
        out = model(y, torch.full((2,), int(td) + 1.0) / 300)
        y = ref.step(out, td, y, generator=gen if sampler == "dpmsolver_sde" else None).prev_sample
    torch.testing.assert_close(ours, y.clamp(0, 1), rtol=0, atol=1e-4)


@pytest.mark.parametrize("sampler,steps", [("ddpm", 0), ("ddim", 20), ("dpmsolver", 10), ("ddpm", 7),
                                           ("dpmsolver_sde", 10)])
def test_v_model_samplers_recover_a_point_mass_from_pure_noise(sampler, steps):
    """Every DDPM sampler takes a v-model on a zero-terminal-SNR schedule and starts at t = T - 1."""
    s = NoiseSchedule.linear(100, 1e-4, 0.05, zero_terminal_snr=True)
    target = torch.rand(1, 1, 28, 28) * 0.8 + 0.1
    model = Recording(PointMassV(target, s))
    model.prediction = "v"
    out, _ = sample_ddpm(model, DDPM("time_ddpm", s), 3, torch.Generator().manual_seed(0), sampler=sampler,
                         steps=steps)
    assert model.calls[0][0] == 99
    torch.testing.assert_close(out, target.expand(3, -1, -1, -1), rtol=0, atol=2e-3)


def test_a_saved_model_carries_its_prediction(tmp_path):
    """The model file records eps or v; the samplers, guidance_sweep and Part A read it from there. Files written
    before it was recorded load as eps."""
    import json

    from safetensors.torch import save_file

    from difflab.core.weights import load_model, save_model

    save_model(tmp_path / "v.safetensors", families.build_model("class_ddpm", 4, "v"), "class_ddpm")
    save_model(tmp_path / "eps.safetensors", families.build_model("time_ddpm", 4), "time_ddpm")
    assert load_model(tmp_path / "v.safetensors")[0].prediction == "v"
    assert load_model(tmp_path / "eps.safetensors")[0].prediction == "eps"
    old = families.build_model("time_ddpm", 4)
    save_file(old.state_dict(), str(tmp_path / "old.safetensors"),
              metadata={"config": json.dumps({"kind": "time_ddpm", "hidden": 4})})
    assert load_model(tmp_path / "old.safetensors")[0].prediction == "eps"
    with pytest.raises(ValueError, match="'v' only for DDPM kinds"):
        families.build_model("time_fm", 4, "v")
    model = families.make_family("time_ddpm", NoiseSchedule.linear(20), prediction="v").build(4)
    assert model.prediction == "v"


# ---------------------------------------------------------------- guidance interval

class Calls(nn.Module):
    """Wraps a class-conditioned UNet and records (rows, time input) of every forward."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []
        self.prediction = inner.prediction

    def forward(self, x, t, c=None):
        self.calls.append((len(x), round(float(t[0]), 6)))
        return self.inner(x, t, c)


def class_models():
    torch.manual_seed(0)
    return {"ddpm": Calls(build_model("class_ddpm", 4).eval()), "flow": Calls(build_model("class_fm", 4).eval())}


def draw(model, family, interval, gamma=5.0):
    s = NoiseSchedule.linear(20)
    labels = torch.tensor([3, 7])
    common = dict(labels=labels, gamma=gamma, guidance_interval=interval)
    if family == "ddpm":
        return sample_ddpm(model, DDPM("class_ddpm", s), 2, torch.Generator().manual_seed(0), **common)[0]
    return sample_flow(model, 2, torch.Generator().manual_seed(0), sampler="heun", steps=4, **common)[0]


@pytest.mark.parametrize("family", ["ddpm", "flow"])
def test_guidance_interval_over_every_level_is_plain_cfg_and_an_empty_one_is_the_conditional_model(family):
    model = class_models()[family]
    assert torch.equal(draw(model, family, [0.0, 1.0]), draw(model, family, None))
    assert not torch.equal(draw(model, family, [0.0, 1.0]), draw(model, family, None, gamma=1.0))
    model.calls.clear()
    none_guided = draw(model, family, [0.53, 0.54])  # no DDPM level (t + 1) / 20, no flow level 1 - i / 4 in it
    assert {rows for rows, _ in model.calls} == {2}, "outside the interval a forward has n rows, not 2n"
    assert torch.equal(none_guided, draw(model, family, None, gamma=1.0))


def test_guidance_interval_guides_exactly_the_steps_whose_noise_level_is_inside():
    """DDPM step at t has s = (t + 1) / T; flow step at time t has s = 1 - t, and Heun's two evaluations follow
    the level its step starts from. Guided forwards carry [cond; uncond] (4 rows), the others 2."""
    models = class_models()
    draw(models["ddpm"], "ddpm", [0.3, 0.6])
    ddpm = [(rows, round(t * 20) - 1) for rows, t in models["ddpm"].calls]
    assert [t for _, t in ddpm] == list(range(19, -1, -1))
    assert [t for rows, t in ddpm if rows == 4] == list(range(11, 4, -1))  # (t + 1) / 20 in [0.3, 0.6]
    draw(models["flow"], "flow", [0.4, 0.8])
    assert models["flow"].calls == [(2, 0.0), (2, 0.25), (4, 0.25), (4, 0.5), (4, 0.5), (4, 0.75), (2, 0.75)]
    models["flow"].calls.clear()  # generate and generate_in_batches pass the interval on
    choice = SamplerChoice(flow_sampler="heun", flow_steps=4)
    batched = generate_in_batches(models["flow"], FlowMatching("class_fm"), 2, torch.Generator().manual_seed(0), 2,
                                  "fp32", torch.tensor([3, 7]), gamma=5.0, guidance_interval=[0.4, 0.8],
                                  choice=choice)
    assert [rows for rows, _ in models["flow"].calls] == [2, 2, 4, 4, 4, 4, 2]
    assert torch.equal(batched, draw(models["flow"], "flow", [0.4, 0.8]).mul(255).round().div(255))


def test_cfg_at_gamma_one_is_one_conditional_forward():
    calls = []
    out = with_cfg(Toy(calls), torch.tensor([2, 5]), gamma=1.0)(torch.zeros(2, 1, 2, 2), torch.zeros(2))
    assert calls == [2] and torch.equal(out[:, 0, 0, 0], torch.tensor([2.0, 5.0]))
    out = with_cfg(Toy(calls), torch.tensor([2, 5]), gamma=3.0)(torch.zeros(2, 1, 2, 2), torch.zeros(2), False)
    assert calls == [2, 2] and torch.equal(out[:, 0, 0, 0], torch.tensor([2.0, 5.0]))  # unguided: the cond rows


def test_sample_stage_passes_the_guidance_interval_and_names_it():
    import copy
    from pathlib import Path

    import yaml

    from difflab.part_b.samples import SampleRun

    params = yaml.safe_load((Path(__file__).parent / "tiny_params.yaml").read_text())
    assert SampleRun("class_ddpm", params).interval is None
    params = copy.deepcopy(params)
    params["sample"]["guidance_interval"] = [0.2, 0.8]
    run = SampleRun("class_fm", params)
    assert run.interval == [0.2, 0.8] and run.guidance == "CFG gamma=5.0 at noise levels 0.2-0.8"
    assert SampleRun("time_fm", params).interval is None  # no guidance, no interval


def test_guidance_sweep_scores_each_scale_with_cfg_everywhere_and_only_in_the_interval_from_the_same_noise(
        tmp_path, monkeypatch):
    """With guidance_sweep.interval every scale is sampled twice from the same noise, CFG at every step and CFG only
    in the interval; at gamma = 1 both are the same samples, drawn once. Each gets its own TSV line."""
    from conftest import write_fake_mnist

    from difflab.evaluation import metrics
    from difflab.evaluation.classifier import Classifier
    from difflab.part_b import guidance
    from difflab.pipeline.runtime import generator

    monkeypatch.setattr(metrics, "CAS_STEPS", 4)
    write_fake_mnist(tmp_path / "MNIST" / "raw", n_train=120, n_test=40)
    torch.manual_seed(0)
    classifier = Classifier().eval()
    ref = metrics.reference(classifier, tmp_path, n=20)
    model, family = class_models()["flow"], FlowMatching("class_fm")
    choice = SamplerChoice(flow_sampler="heun", flow_steps=4)
    common = (model, family, [1.0, 5.0], 20, 3, classifier, ref, 20, "fp32")
    rows = guidance.sweep(*common, [0.4, 0.8], choice=choice)
    assert len(model.calls) == 3 * 7, "gamma = 1 sampled once, gamma = 5 twice; 7 forwards each (Heun, 4 steps)"
    plain = guidance.sweep(*common, choice=choice)
    assert [{k: v for k, v in r.items() if k != "interval"} for r in rows] == plain
    assert rows[0]["interval"] == {k: v for k, v in plain[0].items() if k != "gamma"}
    labels = torch.arange(20) % 10
    inside = generate_in_batches(model, family, 20, generator(torch.device("cpu"), 3), 20, "fp32", labels, gamma=5.0,
                                 guidance_interval=[0.4, 0.8], choice=choice)
    expected = metrics.sample_scores(classifier, inside, ref, labels)
    assert rows[1]["interval"]["fid"] == expected["fid"] and rows[1]["interval"]["cas"] == expected["cas"]
    assert rows[1]["interval"]["fid"] != rows[1]["fid"]
    assert "interval" not in plain[0]
    lines = guidance.tsv([{"gamma": r["gamma"], **r["interval"]} for r in rows]).splitlines()
    assert lines[0].split("\t") == guidance.TSV and lines[2].split("\t")[4] == str(expected["fid"])


def test_sample_stage_logs_one_grid_per_snapshot_by_step_and_the_report_shows_the_epoch_ones(tmp_path, monkeypatch):
    """train@ then sample@ in a scratch directory: DVCLive images named by step, one per snapshot (the epochs and three
    steps of epoch 1), nothing written outside sample@'s out; the manifest's per-epoch figures are those images; a
    promised epoch snapshot that is missing stops the stage with the command that restores it."""
    import json
    import runpy
    import sys
    from pathlib import Path

    import numpy as np
    import yaml
    from conftest import REPO, write_fake_mnist
    from PIL import Image

    from difflab.evaluation.classifier import Classifier, save_classifier
    from difflab.core.weights import list_snapshots
    from difflab.part_b.samples import SampleRun, training_snapshots, write_samples
    from difflab.pipeline.errors import MissingFileError

    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load((REPO / "tests" / "tiny_params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_fake_mnist(tmp_path / "data" / "mnist" / "MNIST" / "raw", 300, 100)
    monkeypatch.setattr(sys, "argv", ["train", "class_fm"])
    runpy.run_path(str(REPO / "stages" / "train.py"), run_name="__main__")  # 4 steps an epoch, 2 epochs
    save_classifier(tmp_path / "models" / "classifier.safetensors", Classifier())
    before = {p for p in tmp_path.rglob("*") if p.is_file()}

    write_samples("class_fm", params)
    out = tmp_path / "reports" / "samples" / "class_fm"
    new_outside = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                   if p.is_file() and p not in before and out not in p.parents}
    assert new_outside == {"reports/metrics/sample_class_fm.json"}
    images = sorted((out / "live" / "plots" / "images" / "samples").iterdir(), key=lambda p: int(p.stem))
    assert [p.name for p in images] == ["1.png", "2.png", "3.png", "4.png", "8.png"]
    pixels = [np.asarray(Image.open(p)) for p in images]
    assert all(p.shape == pixels[0].shape for p in pixels)
    assert not any(np.array_equal(a, b) for a, b in zip(pixels, pixels[1:]))  # other weights, other samples

    entries = json.loads((out / "manifest.json").read_text())
    per_epoch = {e["title"]: e["file"] for e in entries if "samples after epoch" in e["title"]}
    assert per_epoch == {"class_fm: samples after epoch 1": "live/plots/images/samples/4.png",
                         "class_fm: samples after epoch 2": "live/plots/images/samples/8.png"}
    assert not list(out.glob("epoch_*.png"))  # no second copy of the same grids
    run, snaps = SampleRun("class_fm", params), list_snapshots(tmp_path / "models" / "snapshots" / "class_fm")
    assert [run.title(s) for s in (snaps[2], snaps[-1])] == [
        "class_fm: samples at step 3 (epoch 0.75, CFG gamma=5.0)", "class_fm: samples at step 8 (after epoch 2, "
        "CFG gamma=5.0)"]

    (tmp_path / "models" / "snapshots" / "class_fm" / "epoch_01.safetensors").unlink()
    with pytest.raises(MissingFileError, match=r"no snapshots in models/snapshots/class_fm of epoch 1; .*"
                                               r"`dvc checkout models/snapshots/class_fm`"):
        training_snapshots("class_fm", params["models"]["class_fm"])


def test_dvc_plots_list_the_slider_images_of_every_sampled_model():
    """dvc.yaml's top-level plots name each sample@ stage's DVCLive image directory, the one write_samples logs to,
    so `dvc plots show` / `dvc plots diff` list every generative model's grids by step (checked live in
    test_pipeline.py)."""
    from pathlib import Path

    import yaml

    from difflab.part_b.samples import slider_image

    repo = Path(__file__).resolve().parents[1]
    dvc_yaml = yaml.safe_load((repo / "dvc.yaml").read_text())
    plots = {p for p in dvc_yaml["plots"] if isinstance(p, str)}
    sampled = yaml.safe_load((repo / "params.yaml").read_text())["sampling"]
    images = {f"reports/samples/{name}/{Path(slider_image(0)).parent.parent.as_posix()}" for name in sampled}
    assert images <= plots, sorted(images - plots)
    assert dvc_yaml["stages"]["sample"]["do"]["outs"] == ["reports/samples/${key}"]  # the images are its outs
