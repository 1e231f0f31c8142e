"""Views for visual anagrams: each is an invertible pixel transform with `view` and `inverse_view`.

A view must map N(0, I) noise to N(0, I) noise (a permutation of pixels, optionally with sign flips), so that a
viewed noisy image is still a valid input to the denoiser (Geng et al., Visual Anagrams). New illusions are new
views, not new sampling loops.
"""
from __future__ import annotations

import torch


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


class NegateView(View):
    """Negate every value: in a [-1, 1] pixel space this is the colour-inverted image."""

    name = "negate"

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return -x

    inverse_view = view


class JigsawView(View):
    """Cut the image into a grid x grid set of square patches and shuffle them with a fixed permutation."""

    name = "jigsaw"

    def __init__(self, grid: int = 4, seed: int = 0):
        if grid < 1:
            raise ValueError(f"jigsaw grid must be >= 1, got {grid}")
        self.grid = grid
        self.perm = torch.randperm(grid * grid, generator=torch.Generator().manual_seed(seed))
        self.inverse = torch.argsort(self.perm)

    def _patches(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        *lead, h, w = x.shape
        g = self.grid
        if h % g or w % g:
            raise ValueError(f"jigsaw with a {g}x{g} grid needs H and W divisible by {g}, got {h}x{w}")
        ph, pw = h // g, w // g
        # (..., g, ph, g, pw) -> (..., g*g, ph, pw): patch k is row k // g, column k % g
        p = x.reshape(*lead, g, ph, g, pw).movedim(-3, -2).reshape(*lead, g * g, ph, pw)
        return p, ph, pw

    def _assemble(self, p: torch.Tensor, ph: int, pw: int) -> torch.Tensor:
        *lead, _, _, _ = p.shape
        g = self.grid
        return p.reshape(*lead, g, g, ph, pw).movedim(-2, -3).reshape(*lead, g * ph, g * pw)

    def view(self, x: torch.Tensor) -> torch.Tensor:
        p, ph, pw = self._patches(x)
        return self._assemble(p[..., self.perm.to(x.device), :, :], ph, pw)

    def inverse_view(self, x: torch.Tensor) -> torch.Tensor:
        p, ph, pw = self._patches(x)
        return self._assemble(p[..., self.inverse.to(x.device), :, :], ph, pw)


VIEWS: dict[str, type[View]] = {v.name: v for v in (View, FlipView, RotateCWView, RotateCCWView, NegateView,
                                                    JigsawView)}


def get_view(name: str) -> View:
    """The view registered under `name`; unknown names list the choices."""
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r}; choose one of {', '.join(VIEWS)}")
    return VIEWS[name]()
