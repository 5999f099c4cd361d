"""The growth machinery that the progressively growing families share (PGGAN, StyleGAN; Karras et al. 2018,
Sec. 3): the resolutions a network grows through, its widths per resolution (the official `nf`), and the
growth state of a network (current resolution, fade-in alpha) with `set_growth`. Each family's blocks and
its fade-in blend live in its own folder; equalised layers are in `layers.py`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MIN_RESOLUTION, MAX_RESOLUTION = 4, 1024
LRELU_SLOPE = 0.2  # leaky ReLU 0.2 everywhere (Appendix A.1)


def feature_maps(resolution: int, fmap_base: int = 8192, fmap_max: int = 512) -> int:
    """Channels of the blocks at `resolution` (official `nf(log2 r - 1)`): 512 up to 32x32 at full size,
    then 256, 128, 64, 32, 16 at 1024x1024. Resolution 2 gives the width of D's hidden dense layer."""
    return min(int(fmap_base / 2 ** (int(math.log2(resolution)) - 1)), fmap_max)


def check_resolution(resolution: int, what: str, top: int = MAX_RESOLUTION) -> int:
    """log2 of a power-of-two resolution in [4, top]."""
    if (
        not isinstance(resolution, int)
        or resolution < MIN_RESOLUTION
        or resolution > top
        or resolution & (resolution - 1)
    ):
        raise ValueError(f"{what}={resolution!r} must be a power of two between {MIN_RESOLUTION} and {top}")
    return int(math.log2(resolution))


def widths_per_resolution(final: int, fmap_base: int, fmap_max: int) -> dict[int, int]:
    """nf(r) for r = 2, 4, ..., final; every width must be at least 1."""
    nf = {2**k: feature_maps(2**k, fmap_base, fmap_max) for k in range(1, int(math.log2(final)) + 1)}
    empty = [r for r, n in nf.items() if n < 1]
    if empty:
        raise ValueError(
            f"fmap_base={fmap_base} leaves no feature maps at {empty[0]}x{empty[0]}; "
            f"use fmap_base >= {final // 2} for resolution {final}"
        )
    return nf


class GrowthState(nn.Module):
    """The growth stage shared by G and D: current resolution (int), fade-in alpha (0-dim buffer)."""

    def _init_growth(self, final_resolution: int) -> None:
        self.final_resolution = final_resolution
        self.resolution = final_resolution  # built as the grown network; the schedule starts it at 4
        self.fading = False  # a transition's blend runs (set by set_growth: resolution > 4 and alpha < 1)
        self.register_buffer("alpha", torch.ones(()))

    @property
    def stage(self) -> int:
        """0 at 4x4, 1 at 8x8, ..., log2(R) - 2 at the final resolution."""
        return int(math.log2(self.resolution)) - 2

    def set_growth(self, resolution: int, alpha: float) -> None:
        """Run at `resolution` (a power of two in [4, R]) with fade-in `alpha` in [0, 1] of its block:
        0 = exactly the previous stage (resized), 1 = the new block alone. Updates alpha in place."""
        check_resolution(resolution, "resolution", self.final_resolution)
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha={alpha} must be in [0, 1]")
        self.resolution = resolution
        self.fading = resolution > MIN_RESOLUTION and alpha < 1.0
        with torch.no_grad():
            self.alpha.fill_(alpha)

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}/{self.final_resolution}, fading={self.fading}"
