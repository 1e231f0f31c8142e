"""Schedule math and samplers checked against closed forms and diffusers."""
import pytest
import torch
from torch import nn

from difflab.core.families import DDPM, Denoiser, FlowMatching, build_model
from difflab.core.reverse import ancestral_step, x0_from_eps
from difflab.core.schedule import NoiseSchedule, flow_interpolate
from difflab.core.unet import one_hot
from difflab.sampling.choice import SamplerChoice
from difflab.sampling.samplers import generate, sample_ddpm, sample_flow, trailing_timesteps, with_cfg

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


def test_ancestral_step_equals_diffusers_ddpm_step():
    from diffusers import DDPMScheduler
    s = NoiseSchedule.linear(300, 1e-4, 0.02)
    ref = DDPMScheduler(num_train_timesteps=300, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                        clip_sample=False, variance_type="fixed_small", thresholding=False)
    xt, eps = torch.randn(2, 1, 28, 28), torch.randn(2, 1, 28, 28)
    for t in (299, 149, 1, 0):
        noise = torch.randn(xt.shape, generator=torch.Generator().manual_seed(t))
        ours = ancestral_step(s, xt, torch.full((2,), t), torch.full((2,), t - 1), eps, noise)
        theirs = ref.step(eps, t, xt, generator=torch.Generator().manual_seed(t)).prev_sample
        assert torch.allclose(ours, theirs, rtol=1e-3, atol=1e-4), t


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


def test_cfg_is_one_batched_forward_with_the_spec_formula():
    calls = []

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x, t, c):
            calls.append(x.shape[0])
            return x + c.argmax(1).float().view(-1, 1, 1, 1) + 10 * (c.sum(1) == 0).float().view(-1, 1, 1, 1)

    f = with_cfg(Toy(), torch.tensor([2, 5]), gamma=3.0)
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
                            gamma=gamma)
    assert torch.equal(backbone.decode(part_a), part_b)
