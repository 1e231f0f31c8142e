"""Anagram views are exact inverses that keep Gaussian noise Gaussian; low + high pass is the identity."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from difflab.filters import highpass, lowpass, scaled_kernel
from difflab.views import VIEWS, JigsawView, get_view

PERMUTATIONS = [name for name in VIEWS if name != "negate"]


@st.composite
def images(draw):
    """Random (N, C, S, S) noise with S a multiple of 4 (the default jigsaw grid)."""
    n, c, side = draw(st.integers(1, 3)), draw(st.integers(1, 3)), 4 * draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**31 - 1))
    return torch.randn(n, c, side, side, generator=torch.Generator().manual_seed(seed))


@settings(max_examples=25, deadline=None)
@given(x=images(), name=st.sampled_from(sorted(VIEWS)))
def test_inverse_view_undoes_view(x, name):
    view = get_view(name)
    assert torch.equal(view.inverse_view(view.view(x)), x)
    assert torch.equal(view.view(view.inverse_view(x)), x)


@settings(max_examples=25, deadline=None)
@given(x=images(), name=st.sampled_from(PERMUTATIONS))
def test_permutation_views_keep_the_noise_values(x, name):
    """An exact pixel permutation of N(0, I) noise is N(0, I): the same multiset of values, per image."""
    y = get_view(name).view(x)
    assert y.shape == x.shape
    assert torch.equal(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)


@settings(max_examples=10, deadline=None)
@given(x=images())
def test_negate_flips_the_sign(x):
    assert torch.equal(get_view("negate").view(x), -x)


def test_views_do_what_their_names_say():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(get_view("flip").view(x)[0, 0, 0], x[0, 0, 3])  # upside down: last row on top
    assert get_view("rotate_cw").view(x)[0, 0, 0, 3] == x[0, 0, 0, 0]  # top-left corner goes to top-right
    assert get_view("rotate_ccw").view(x)[0, 0, 3, 0] == x[0, 0, 0, 0]
    jig = JigsawView(grid=2).view(x)
    assert not torch.equal(jig, x) and sorted(jig.flatten().tolist()) == sorted(x.flatten().tolist())


def test_bad_views_say_what_is_allowed():
    with pytest.raises(ValueError, match="flip"):
        get_view("flop")
    with pytest.raises(ValueError, match="divisible by 4"):
        JigsawView(grid=4).view(torch.zeros(1, 1, 6, 6))


@settings(max_examples=15, deadline=None)
@given(x=images(), kernel=st.sampled_from([1, 3, 5, 7]), sigma=st.floats(0.3, 3.0))
def test_lowpass_plus_highpass_is_identity(x, kernel, sigma):
    torch.testing.assert_close(lowpass(x, kernel, sigma) + highpass(x, kernel, sigma), x, rtol=0, atol=1e-5)


def test_filters_scale_with_the_image():
    assert scaled_kernel(33, 2.0, 64) == (33, 2.0)
    assert scaled_kernel(33, 2.0, 28) == (15, 0.875)
    k, _ = scaled_kernel(5, 2.0, 28)
    assert k % 2 == 1
