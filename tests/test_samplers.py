"""Schedule math and samplers checked against closed forms and diffusers."""
import pytest
import torch
from torch import nn

from difflab.samplers import SamplerChoice, generate, guided, sample_ddpm, sample_flow
from difflab.schedule import DDPMSchedule, flow_interpolate


class PointMassEps(nn.Module):
    """The exact eps-predictor when all data is one image x*: eps = (x_t - sqrt(abar) x*) / sqrt(1 - abar)."""

    def __init__(self, target, schedule):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.target, self.s = target, schedule

    def forward(self, x, t, c=None):
        steps = (t * self.s.num_ts).round().long()
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
    s = DDPMSchedule.linear(300, 1e-4, 0.02)
    assert s.alphas_cumprod[0] == 1 and len(s.betas) == 301
    assert torch.allclose(s.betas[1:], torch.linspace(1e-4, 0.02, 300))
    x0, eps, t = torch.rand(4, 1, 28, 28), torch.randn(4, 1, 28, 28), torch.tensor([1, 50, 150, 300])
    xt = s.forward(x0, t, eps)
    abar = s.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(xt, abar.sqrt() * x0 + (1 - abar).sqrt() * eps)
    assert torch.allclose(s.x0_from_eps(xt, t, eps), x0, atol=1e-4)


def test_posterior_step_equals_diffusers_ddpm_step():
    from diffusers import DDPMScheduler
    s = DDPMSchedule.linear(300, 1e-4, 0.02)
    ref = DDPMScheduler(num_train_timesteps=300, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                        clip_sample=False, variance_type="fixed_small", thresholding=False)
    xt, eps = torch.randn(2, 1, 28, 28), torch.randn(2, 1, 28, 28)
    for t in (300, 150, 2, 1):
        noise = torch.randn(xt.shape, generator=torch.Generator().manual_seed(t))
        ours = s.posterior_step(xt, torch.full((2,), t), eps, noise)
        theirs = ref.step(eps, t - 1, xt, generator=torch.Generator().manual_seed(t)).prev_sample
        assert torch.allclose(ours, theirs, rtol=1e-3, atol=1e-4), t


@pytest.mark.parametrize("sampler,steps", [("ddpm", 0), ("ddim", 20), ("dpmsolver", 10), ("ddpm", 50)])
def test_ddpm_samplers_recover_a_point_mass(sampler, steps):
    s = DDPMSchedule.linear(100, 1e-4, 0.05)
    target = torch.rand(1, 1, 28, 28) * 0.8 + 0.1
    out, frames = sample_ddpm(PointMassEps(target, s), s, 3, torch.Generator().manual_seed(0),
                              sampler=sampler, steps=steps, frame_every=10)
    assert torch.allclose(out, target.expand(3, -1, -1, -1), atol=2e-3)
    assert len(frames) >= 2 and torch.allclose(frames[-1], out)


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

    f = guided(Toy(), torch.tensor([2, 5]), gamma=3.0)
    x = torch.zeros(2, 1, 2, 2)
    out = f(x, torch.zeros(2))
    assert calls == [4]
    uncond, cond = 10.0, torch.tensor([2.0, 5.0]).view(-1, 1, 1, 1)
    assert torch.allclose(out, uncond + 3.0 * (cond - uncond))


def test_generate_uses_the_family_choice_and_rejects_unknown_samplers():
    s = DDPMSchedule.linear(10)
    target = torch.rand(1, 1, 28, 28)
    choice = SamplerChoice(ddpm_sampler="ddim", ddpm_steps=5, flow_sampler="heun", flow_steps=4)
    out, frames = generate(PointMassEps(target, s), "time_ddpm", 2, torch.Generator(), schedule=s, choice=choice,
                           frame_every=1)
    assert len(frames) == 5 and torch.allclose(out, target.expand(2, -1, -1, -1), atol=2e-3)
    out, frames = generate(PointMassVelocity(target), "time_fm", 2, torch.Generator(), choice=choice, frame_every=1)
    assert len(frames) == 4
    assert choice.describe("class_ddpm") == "DDIM sampling, 5 steps"
    with pytest.raises(ValueError, match="unknown DDPM sampler"):
        generate(PointMassEps(target, s), "time_ddpm", 1, torch.Generator(), schedule=s,
                 choice=SamplerChoice(ddpm_sampler="euler"))
    with pytest.raises(ValueError, match="unknown flow sampler"):
        generate(PointMassVelocity(target), "time_fm", 1, torch.Generator(), choice=SamplerChoice(flow_sampler="ddim"))


def test_sampling_gifs_get_about_thirty_frames_whatever_the_step_count():
    assert SamplerChoice(ddpm_sampler="ddpm", ddpm_steps=0).frame_every("class_ddpm", 300) == 10
    assert SamplerChoice(ddpm_sampler="dpmsolver", ddpm_steps=20).frame_every("class_ddpm", 300) == 1
    assert SamplerChoice(flow_sampler="euler", flow_steps=90).frame_every("class_fm") == 3
    assert SamplerChoice(flow_sampler="heun", flow_steps=10).describe("time_fm") == "Heun integration of the flow, 10 steps"
