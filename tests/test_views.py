"""Anagram views are exact inverses that keep Gaussian noise Gaussian; band views (hybrids) are not invertible by
design: they keep x_t and project the estimate, and the bands of an illusion sum to the identity."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from difflab.part_a.filters import highpass, lowpass, scaled_kernel
from difflab.part_a.views import (
    VIEWS,
    JigsawView,
    PatchPermuteView,
    get_view,
    hybrid_views,
    is_permutation,
    three_band_views,
)
from difflab.pipeline.params import VIEW_NAMES

pytestmark = pytest.mark.unit

PERMUTATIONS = [name for name in VIEWS if is_permutation(get_view(name))]


@st.composite
def images(draw):
    """Random (N, C, S, S) noise with S a multiple of 4 (the jigsaw and patch grids)."""
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


def test_every_grayscale_view_of_visual_anagrams_is_here():
    assert set(VIEWS) == set(VIEW_NAMES) == {
        "identity", "flip", "rotate_cw", "rotate_ccw", "rotate_180", "negate", "skew", "patch_permute",
        "pixel_permute", "jigsaw", "inner_circle", "square_hinge"}
    assert [name for name in VIEWS if name not in PERMUTATIONS] == ["negate"]


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_views_keep_standard_normal_noise_standard_normal(name):
    """Over many noise images the viewed pixels have mean 0, variance 1 and no correlation with their neighbours."""
    x = torch.randn(4000, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = get_view(name).view(x)
    assert abs(y.mean()) < 0.01 and abs(y.var() - 1) < 0.01
    pixels = y.flatten(1)
    corr = torch.corrcoef(pixels[:, ::37].T)  # a sample of pixel pairs
    assert (corr - torch.eye(len(corr))).abs().max() < 0.1


def test_views_do_what_their_names_say():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(get_view("flip").view(x)[0, 0, 0], x[0, 0, 3])  # upside down: last row on top
    assert get_view("rotate_cw").view(x)[0, 0, 0, 3] == x[0, 0, 0, 0]  # top-left corner goes to top-right
    assert get_view("rotate_ccw").view(x)[0, 0, 3, 0] == x[0, 0, 0, 0]
    assert torch.equal(get_view("rotate_180").view(x)[0, 0], x[0, 0].flip(0).flip(1))
    patches = PatchPermuteView(grid=2).view(x)
    assert not torch.equal(patches, x) and sorted(patches.flatten().tolist()) == sorted(x.flatten().tolist())
    # skew: column j rolls by int(factor * (j - W/2)), rows keep their order within a column
    big = torch.arange(64.0).view(1, 1, 8, 8)
    skewed = get_view("skew").view(big)
    for j in range(8):
        assert torch.equal(skewed[0, 0, :, j], big[0, 0, :, j].roll(int(0.5 * (j - 4))))


def test_inner_circle_turns_only_the_disc():
    x = torch.randn(1, 1, 28, 28)
    y = get_view("inner_circle").view(x)
    rows, cols = torch.meshgrid(torch.arange(28) - 13.5, torch.arange(28) - 13.5, indexing="ij")
    inside = rows ** 2 + cols ** 2 < (28 * 3 / 8) ** 2
    assert torch.equal(y[0, 0][~inside], x[0, 0][~inside])
    assert torch.equal(y[0, 0][inside], x[0, 0].rot90(2)[inside])


def test_square_hinge_turns_each_of_nine_squares_a_quarter():
    x = torch.randn(1, 1, 27, 27)
    y = get_view("square_hinge").view(x)
    for i in range(3):
        for j in range(3):
            block, turned = x[0, 0, 9 * i:9 * i + 9, 9 * j:9 * j + 9], y[0, 0, 9 * i:9 * i + 9, 9 * j:9 * j + 9]
            assert torch.equal(turned, block.rot90(1 if (i + j) % 2 else -1))


def test_jigsaw_moves_pieces_within_their_ring_turned():
    x = torch.randn(1, 1, 28, 28)
    view = JigsawView(seed=3)
    y = view.view(x)
    pieces = {(r, c): x[0, 0, 7 * r:7 * r + 7, 7 * c:7 * c + 7] for r in range(4) for c in range(4)}
    for ring in JigsawView.RINGS:
        for place in ring:
            shown = y[0, 0, 7 * place[0]:7 * place[0] + 7, 7 * place[1]:7 * place[1] + 7]
            # some piece of the same ring, turned by some quarter turns, is what is shown here
            assert any(torch.equal(shown, pieces[src].rot90(-k)) for src in ring for k in range(4))
    assert (view.turns != 0).any()


def test_bad_views_say_what_is_allowed():
    with pytest.raises(ValueError, match="flip"):
        get_view("flop")
    with pytest.raises(ValueError, match="divisible by 4"):
        PatchPermuteView(grid=4).view(torch.zeros(1, 1, 6, 6))
    with pytest.raises(ValueError, match="square image"):
        JigsawView().view(torch.zeros(1, 1, 8, 12))


@settings(max_examples=15, deadline=None)
@given(x=images(), kernel=st.sampled_from([1, 3, 5, 7]), sigma=st.floats(0.3, 3.0))
def test_lowpass_plus_highpass_is_identity(x, kernel, sigma):
    torch.testing.assert_close(lowpass(x, kernel, sigma) + highpass(x, kernel, sigma), x, rtol=0, atol=1e-5)


@settings(max_examples=15, deadline=None)
@given(x=images(), sigmas=st.tuples(st.floats(1.0, 3.0), st.floats(0.3, 0.9)))
def test_band_views_keep_x_and_their_projections_sum_to_the_estimate(x, sigmas):
    low, high = (7, sigmas[0]), (3, sigmas[1])  # reflect padding below the smallest side, 4 px
    for views in (hybrid_views(*low), three_band_views(low, high)):
        assert all(v.view(x) is x for v in views)
        torch.testing.assert_close(sum(v.inverse_view(x) for v in views), x, rtol=0, atol=1e-5)
    assert not {v.name for v in three_band_views(low, high)} & (set(VIEWS) | set(VIEW_NAMES))  # built in code


def test_filters_scale_with_the_image():
    assert scaled_kernel(33, 2.0, 64) == (33, 2.0)
    assert scaled_kernel(33, 2.0, 28) == (15, 0.875)
    k, _ = scaled_kernel(5, 2.0, 28)
    assert k % 2 == 1
