"""Views for illusions: `view` transforms the noisy image a prompt's denoiser sees, `inverse_view` maps that
prompt's noise estimate back (see loops.illusion).

Anagram views (VIEWS, by name) are invertible pixel transforms that map N(0, I) noise to N(0, I) noise (a
permutation of pixels, optionally with sign flips), so that a viewed noisy image is still a valid input to the
denoiser (Geng et al., Visual Anagrams). Every view of dangeng/visual_anagrams that makes sense in grayscale is
here; all but negate are pixel permutations, built per image size from an index map and inverted with its argsort.
Band views (hybrid_views, three_band_views) are factorized diffusion's (Geng et al., 2024): `view` is the identity
and `inverse_view` keeps one frequency band of the estimate. They take a filter, so they are built in code, not
named in params. New illusions are new views, not new sampling loops.
"""
from __future__ import annotations

import torch

from difflab.part_a.filters import highpass, lowpass


class View:
    """Identity view; subclasses override both methods so that inverse_view(view(x)) == x for (N, C, H, W) x."""

    name = "identity"

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def inverse_view(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FlipView(View):
    """Upside down: reverse the rows (the course's `flip`)."""

    name = "flip"

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-2)

    inverse_view = view


class RotateCWView(View):
    """Rotate 90 degrees clockwise (square images)."""

    name = "rotate_cw"

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return x.rot90(-1, (-2, -1))

    def inverse_view(self, x: torch.Tensor) -> torch.Tensor:
        return x.rot90(1, (-2, -1))


class RotateCCWView(RotateCWView):
    """Rotate 90 degrees counter-clockwise (square images)."""

    name = "rotate_ccw"

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return super().inverse_view(x)

    def inverse_view(self, x: torch.Tensor) -> torch.Tensor:
        return super().view(x)


class Rotate180View(View):
    """Rotate 180 degrees: upside down and mirrored."""

    name = "rotate_180"

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return x.rot90(2, (-2, -1))

    inverse_view = view


class NegateView(View):
    """Negate every value: in a [-1, 1] pixel space this is the colour-inverted image."""

    name = "negate"

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return -x

    inverse_view = view


class PermutationView(View):
    """A fixed rearrangement of the pixels of an H x W image: output pixel k is input pixel source(H, W)[k].

    Subclasses define `source` (a LongTensor of H*W flat indices, a permutation); view gathers with it and
    inverse_view with its argsort, so the two are exact inverses and noise values are only moved, never mixed."""

    def source(self, h: int, w: int) -> torch.Tensor:
        raise NotImplementedError

    def _index(self, h: int, w: int, inverse: bool) -> torch.Tensor:
        cache = self.__dict__.setdefault("_indices", {})
        if (h, w) not in cache:
            src = self.source(h, w).flatten()
            if not torch.equal(src.sort().values, torch.arange(h * w)):
                raise AssertionError(f"{self.name} at {h}x{w} is not a permutation")  # a bug in a view, not input
            cache[h, w] = src, torch.argsort(src)
        return cache[h, w][inverse]

    def _gather(self, x: torch.Tensor, inverse: bool) -> torch.Tensor:
        *lead, h, w = x.shape
        idx = self._index(h, w, inverse).to(x.device)
        return x.reshape(*lead, h * w)[..., idx].reshape(*lead, h, w)

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return self._gather(x, False)

    def inverse_view(self, x: torch.Tensor) -> torch.Tensor:
        return self._gather(x, True)


def _grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")


class SkewView(PermutationView):
    """Roll column j down by round(factor * (j - W/2)) pixels, wrapping around: a shear that keeps every pixel."""

    name = "skew"

    def __init__(self, factor: float = 0.5):
        self.factor = factor

    def source(self, h: int, w: int) -> torch.Tensor:
        rows, cols = _grid(h, w)
        shift = torch.tensor([int(self.factor * (j - w // 2)) for j in range(w)])
        return ((rows - shift[cols]) % h) * w + cols


class PatchPermuteView(PermutationView):
    """Cut the image into grid x grid square patches and shuffle them with a fixed permutation (seeded)."""

    name = "patch_permute"

    def __init__(self, grid: int = 4, seed: int = 0):
        if grid < 1:
            raise ValueError(f"{self.name} grid must be >= 1, got {grid}")
        self.grid, self.seed = grid, seed

    def _patch_order(self) -> torch.Tensor:
        return torch.randperm(self.grid ** 2, generator=torch.Generator().manual_seed(self.seed))

    def source(self, h: int, w: int) -> torch.Tensor:
        g = self.grid
        if h % g or w % g:
            raise ValueError(f"{self.name} with a {g}x{g} grid needs H and W divisible by {g}, got {h}x{w}")
        ph, pw = h // g, w // g
        rows, cols = _grid(h, w)
        src_patch = self._patch_order()[(rows // ph) * g + cols // pw]  # the patch shown at each output position
        return ((src_patch // g) * ph + rows % ph) * w + (src_patch % g) * pw + cols % pw


class PixelPermuteView(PermutationView):
    """Every pixel moved to a fixed random place (seeded): an illusion no person can see, kept as a control."""

    name = "pixel_permute"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def source(self, h: int, w: int) -> torch.Tensor:
        return torch.randperm(h * w, generator=torch.Generator().manual_seed(self.seed))


class JigsawView(PermutationView):
    """A 4 x 4 puzzle solved two ways (visual_anagrams' jigsaw with square pieces: at 28 px there is no room for
    knobs). Corner, edge and inner pieces form rings that a quarter turn of the picture maps onto themselves; a
    seeded permutation per ring sends each piece to another place of its ring, turned by the quarter turns that carry
    the one place onto the other, so a piece arrives rotated as a real puzzle piece would."""

    name = "jigsaw"
    # each ring as (row, col) of 4 x 4 pieces, each the previous one turned a quarter clockwise: (r, c) -> (c, 3 - r)
    RINGS = (((0, 0), (0, 3), (3, 3), (3, 0)), ((1, 1), (1, 2), (2, 2), (2, 1)),
             ((0, 1), (1, 3), (3, 2), (2, 0)), ((0, 2), (2, 3), (3, 1), (1, 0)))

    def __init__(self, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.turns = torch.zeros(4, 4, dtype=torch.long)  # clockwise quarter turns that brought the piece shown here
        for ring in self.RINGS:
            moved_to = torch.randperm(4, generator=gen).tolist()  # piece m of the ring goes to place moved_to[m]
            for m, n in enumerate(moved_to):
                self.turns[ring[n]] = (n - m) % 4

    def source(self, h: int, w: int) -> torch.Tensor:
        if h != w or h % 4:
            raise ValueError(f"{self.name} needs a square image with a side divisible by 4, got {h}x{w}")
        rows, cols = _grid(h, w)
        k = self.turns[rows // (h // 4), cols // (w // 4)]
        r, c = rows, cols
        for _ in range(3):  # the source pixel is the output pixel turned back: k quarter turns counter-clockwise
            turn = k > 0
            r, c = torch.where(turn, h - 1 - c, r), torch.where(turn, r, c)
            k = k - turn.long()
        return r * w + c


class InnerCircleView(PermutationView):
    """Turn the disc of radius `radius` (a fraction of the side) by 180 degrees; the ring outside stays."""

    name = "inner_circle"

    def __init__(self, radius: float = 3 / 8):
        self.radius = radius

    def source(self, h: int, w: int) -> torch.Tensor:
        rows, cols = _grid(h, w)
        y, x = rows - (h - 1) / 2, cols - (w - 1) / 2
        inside = x ** 2 + y ** 2 < (self.radius * min(h, w)) ** 2
        # about the exact centre, (r, c) -> (h-1-r, w-1-c) keeps the disc onto itself
        return torch.where(inside, (h - 1 - rows) * w + (w - 1 - cols), rows * w + cols)


class SquareHingeView(PermutationView):
    """A 3 x 3 grid of squares, each turned a quarter turn in place, alternating direction like a hinged puzzle;
    pixels past the last full square stay put."""

    name = "square_hinge"

    def source(self, h: int, w: int) -> torch.Tensor:
        idx = torch.arange(h * w).view(h, w)
        s = min(h, w) // 3
        for i in range(3):
            for j in range(3):
                block = idx[i * s:(i + 1) * s, j * s:(j + 1) * s]
                idx[i * s:(i + 1) * s, j * s:(j + 1) * s] = block.rot90(1 if (i + j) % 2 else -1)
        return idx.flatten()


VIEWS: dict[str, type[View]] = {v.name: v for v in (
    View, FlipView, RotateCWView, RotateCCWView, Rotate180View, NegateView, SkewView, PatchPermuteView,
    PixelPermuteView, JigsawView, InnerCircleView, SquareHingeView)}


def get_view(name: str) -> View:
    """The view registered under `name` with its default settings; unknown names list the choices."""
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r}; choose one of {', '.join(VIEWS)}")
    return VIEWS[name]()


class BandView(View):
    """A frequency band of a factorized illusion: every prompt sees x_t unchanged (`view` is the identity) and
    `inverse_view` projects its estimate onto the band. Not invertible by design: the bands of one illusion sum to
    the identity instead."""

    name = "band"


class LowPassView(BandView):
    """The Gaussian low-pass (kernel, sigma) of the estimate: the prompt seen from afar."""

    name = "lowpass"

    def __init__(self, kernel: int, sigma: float):
        self.kernel, self.sigma = kernel, sigma

    def inverse_view(self, x: torch.Tensor) -> torch.Tensor:
        return lowpass(x, self.kernel, self.sigma)


class HighPassView(LowPassView):
    """The estimate minus its low-pass: the prompt seen up close."""

    name = "highpass"

    def inverse_view(self, x: torch.Tensor) -> torch.Tensor:
        return highpass(x, self.kernel, self.sigma)


class MiddlePassView(BandView):
    """The band between two Gaussian low-passes (kernel, sigma), low's sigma the larger:
    lowpass(high) - lowpass(low)."""

    name = "middlepass"

    def __init__(self, low: tuple[int, float], high: tuple[int, float]):
        self.low, self.high = low, high

    def inverse_view(self, x: torch.Tensor) -> torch.Tensor:
        return lowpass(x, *self.high) - lowpass(x, *self.low)


def hybrid_views(kernel: int, sigma: float) -> list[View]:
    """A hybrid's low and high band (A.1.9), which sum to the identity."""
    return [LowPassView(kernel, sigma), HighPassView(kernel, sigma)]


def three_band_views(low: tuple[int, float], high: tuple[int, float]) -> list[View]:
    """Low, middle and high frequencies from two Gaussian filters (kernel, sigma), low[1] > high[1]; they sum to
    the identity."""
    return [LowPassView(*low), MiddlePassView(low, high), HighPassView(*high)]


def is_permutation(view: View) -> bool:
    """True when the view only moves pixels (all but negate), so noise values are kept exactly."""
    return not isinstance(view, NegateView)

