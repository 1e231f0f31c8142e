"""The UNet matches the spec's block diagram: shapes, parameter counts, conditioning paths."""
import copy

import pytest
import torch
from torch import nn

from difflab.core.families import build_model
from difflab.core.inference import fold_batchnorm
from difflab.core.unet import UNet, one_hot

pytestmark = pytest.mark.unit


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv_bn(cin, cout, k):
    return cin * cout * k * k + cout + 2 * cout  # conv weight + bias + BN affine


def spec_count(d: int) -> int:
    """Parameter count of the unconditional spec UNet, derived block by block from the spec's table."""
    conv_block = lambda cin, cout: conv_bn(cin, cout, 3) + conv_bn(cout, cout, 3)  # noqa: E731
    return (conv_block(1, d)
            + conv_bn(d, d, 3) + conv_block(d, d)              # DownBlock D
            + conv_bn(d, 2 * d, 3) + conv_block(2 * d, 2 * d)  # DownBlock 2D
            + conv_bn(2 * d, 2 * d, 7)                         # Unflatten (ConvT 7x7)
            + conv_bn(4 * d, d, 4) + conv_block(d, d)          # UpBlock 4D -> D
            + conv_bn(2 * d, d, 4) + conv_block(d, d)          # UpBlock 2D -> D
            + conv_block(2 * d, d)
            + d * 9 + 1)                                       # final Conv2d(D, 1, 3)


def fc(cin, cout):
    return cin * cout + cout + cout * cout + cout


@pytest.mark.parametrize("d", [4, 16, 128])
def test_parameter_counts_follow_the_spec(d):
    assert n_params(UNet(d)) == spec_count(d)
    assert n_params(UNet(d, "time")) == spec_count(d) + fc(1, 2 * d) + fc(1, d)
    assert n_params(UNet(d, "class")) == spec_count(d) + fc(1, 2 * d) + fc(1, d) + fc(10, 2 * d) + fc(10, d)


def test_shapes_and_intermediate_resolutions():
    m = UNet(8, "class").eval()
    x = torch.randn(3, 1, 28, 28)
    assert m.down1(m.conv_in(x)).shape == (3, 8, 14, 14)
    assert m.down2(m.down1(m.conv_in(x))).shape == (3, 16, 7, 7)
    assert m.flatten(m.down2(m.down1(m.conv_in(x)))).shape == (3, 16, 1, 1)
    assert m(x, torch.rand(3), one_hot(torch.tensor([1, 2, 3]))).shape == (3, 1, 28, 28)


def _block_inputs(m, *args):
    """Inputs of up1 and up2: they hold the Unflatten and first-UpBlock activations after modulation."""
    seen = {}
    hooks = [getattr(m, n).register_forward_pre_hook(lambda mod, a, n=n: seen.__setitem__(n, a[0].clone()))
             for n in ("up1", "up2")]
    out = m(*args)
    for h in hooks:
        h.remove()
    return out, seen


def _differ(a, b):
    return (a - b).abs().max() > 1e-3 * a.abs().max()


@pytest.mark.parametrize("kind", ["time_ddpm", "time_fm", "class_ddpm", "class_fm"])
def test_conditioning_changes_both_modulated_activations(kind):
    torch.manual_seed(0)
    m = build_model(kind, 8).eval()
    x = torch.randn(2, 1, 28, 28)
    c = one_hot(torch.tensor([3, 3])) if kind.startswith("class") else None
    out_a, a = _block_inputs(m, x, torch.tensor([0.1, 0.1]), c)
    out_b, b = _block_inputs(m, x, torch.tensor([0.9, 0.9]), c)
    assert _differ(a["up1"], b["up1"]) and _differ(a["up2"], b["up2"]), "time embedding has no effect"
    assert not torch.equal(out_a, out_b)
    if c is not None:
        out_o, o = _block_inputs(m, x, torch.tensor([0.1, 0.1]), one_hot(torch.tensor([7, 7])))
        _, u = _block_inputs(m, x, torch.tensor([0.1, 0.1]), torch.zeros(2, 10))
        assert _differ(a["up1"], o["up1"]) and _differ(a["up2"], o["up2"]), "class embedding has no effect"
        assert _differ(a["up1"], u["up1"]) and not torch.equal(out_a, out_o)


# The course pages' pseudo code, per kind, as f(h, t_emb, c_emb) at Unflatten (t1, c1) and after up1 (t2, c2).
# DDPM page (fa24 partb.html):   unflatten = unflatten + t1;  class: unflatten = c1 * unflatten + t1
# Flow page (partb_fm.html):     unflatten = unflatten * t1;  class: unflatten = c1 * unflatten + t1
COURSE_RULE = {"time_ddpm": lambda h, t, c: h + t, "time_fm": lambda h, t, c: h * t,
               "class_ddpm": lambda h, t, c: c * h + t, "class_fm": lambda h, t, c: c * h + t}


@pytest.mark.parametrize("kind", list(COURSE_RULE))
def test_modulation_follows_the_course_pages(kind):
    """In a real forward pass, the tensors entering up1 and up2 hold the Unflatten and first-UpBlock outputs
    modulated exactly as the course's pseudo code says (c = one-hot class through fc*_c, t through fc*_t)."""
    torch.manual_seed(0)
    d = 8
    m = build_model(kind, d).eval()
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([0.2, 0.7])
    c = one_hot(torch.tensor([3, 8])) if kind.startswith("class") else None
    raw = {}
    hooks = [m.unflatten.register_forward_hook(lambda mod, a, out: raw.__setitem__("unflatten", out.clone())),
             m.up1.register_forward_hook(lambda mod, a, out: raw.__setitem__("up1", out.clone()))]
    _, seen = _block_inputs(m, x, t, c)
    for h in hooks:
        h.remove()
    rule = COURSE_RULE[kind]
    with torch.no_grad():
        t1, t2 = (f(t.view(-1, 1))[:, :, None, None] for f in (m.fc1_t, m.fc2_t))
        c1, c2 = (None, None) if c is None else (f(c)[:, :, None, None] for f in (m.fc1_c, m.fc2_c))
    torch.testing.assert_close(seen["up1"][:, 2 * d:], rule(raw["unflatten"], t1, c1))
    torch.testing.assert_close(seen["up2"][:, d:], rule(raw["up1"], t2, c2))


def test_class_flow_model_is_not_the_old_c_t_h_product():
    m = build_model("class_fm", 4)
    h, t, c = torch.randn(2, 8, 7, 7), torch.randn(2, 8), torch.randn(2, 8)
    got = m._modulate(h, t, c)
    assert torch.allclose(got, c[:, :, None, None] * h + t[:, :, None, None])
    assert not torch.allclose(got, c[:, :, None, None] * t[:, :, None, None] * h)
    assert build_model("denoiser", 4).conditioning == "none"


def test_missing_conditioning_is_a_clear_error():
    with pytest.raises(ValueError, match="pass t"):
        UNet(4, "time")(torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match="pass c"):
        UNet(4, "class")(torch.zeros(1, 1, 28, 28), torch.zeros(1))
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("gan", 4)


def test_one_hot_drop_zeroes_rows():
    c = one_hot(torch.tensor([0, 9, 4]), torch.tensor([False, True, False]))
    assert c.tolist() == [[1] + [0] * 9, [0] * 10, [0, 0, 0, 0, 1, 0, 0, 0, 0, 0]]


@pytest.mark.parametrize("kind", ["denoiser", "class_ddpm", "time_fm"])
def test_fold_batchnorm_folds_batchnorm_and_computes_the_same_function(kind):
    torch.manual_seed(0)
    model = build_model(kind, 8)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    cond = () if kind == "denoiser" else (torch.rand(16), one_hot(torch.randint(0, 10, (16,))))
    for _ in range(3):  # move BatchNorm's running statistics and affine weights away from their initial values
        model(torch.rand(16, 1, 28, 28), *cond).square().mean().backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        expected = model(x, *cond)
        fused = fold_batchnorm(copy.deepcopy(model))
        got = fused(x, *cond)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert expected.abs().mean() > 1e-3
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_time_and_class_embeddings_run_in_fp32_under_bf16_autocast():
    """All 300 DDPM time inputs (k + 1) / 300 reach the FC blocks as 300 values and leave them as 300 distinct
    embedding rows, inside a bf16 autocast region. In bf16 (a step of 2^-8 on [0.5, 1], ~1.2 timesteps) they
    would not: the FC blocks run under autocast as before give fewer distinct rows."""
    t = torch.arange(1, 301) / 300
    assert len(t.bfloat16().unique()) < 300  # what bf16 makes of the time inputs
    torch.manual_seed(0)
    model = build_model("class_ddpm", 8).eval()
    seen = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda m, args, out, name=name: seen.update({name: (args[0], out)}))
        for name in ("fc1_t", "fc2_t", "fc1_c", "fc2_c")]
    c = one_hot(torch.arange(300) % 10)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(300, 1, 28, 28), t, c)
    for hook in hooks:
        hook.remove()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        old = model.fc1_t(t.view(-1, 1)), model.fc2_t(t.view(-1, 1))  # the blocks left to autocast
    assert out.dtype == torch.bfloat16, "the rest of the UNet still runs in bf16"
    for name in ("fc1_t", "fc2_t"):
        given, emb = seen[name]
        assert given.dtype == emb.dtype == torch.float32 and torch.equal(given.view(-1), t)
        assert len(given.unique()) == 300 and len(emb.unique(dim=0)) == 300, name
    for emb in old:
        assert emb.dtype == torch.bfloat16 and len(emb.unique(dim=0)) < 300
    for name in ("fc1_c", "fc2_c"):
        given, emb = seen[name]
        assert given.dtype == emb.dtype == torch.float32 and len(emb.unique(dim=0)) == 10, name
    with torch.inference_mode():  # fp32 without autocast: the same embeddings as a plain call
        assert torch.equal(model._embed(model.fc1_t, t.view(-1, 1)), model.fc1_t(t.view(-1, 1)))
