"""Synthetic data: the 2-D mixtures of the VEEGAN/PacGAN protocol and procedural images."""

from __future__ import annotations

import math

import torch

from gandist.data.base import DATASETS, POSITION_BLOCK, DataSource, epoch_indices, mirror, position_blocks
from gandist.registry import register
from gandist.rng import SALTS, position_generator


class GaussianMixture2D(DataSource):
    """Equal-weight isotropic Gaussian mixture in the plane."""

    kind = "points"
    modes: torch.Tensor  # [M, 2] float64 mode centres
    std: float

    @property
    def shape(self) -> tuple[int, ...]:
        return (2,)

    def _block(self, g: torch.Generator) -> torch.Tensor:
        """POSITION_BLOCK draws [B, 3] float64 from one generator: the mode index, then two standard normals."""
        which = torch.randint(len(self.modes), (POSITION_BLOCK, 1), generator=g, dtype=torch.float64)
        return torch.cat([which, torch.randn(POSITION_BLOCK, 2, generator=g, dtype=torch.float64)], dim=1)

    def _draw(self, position: int, n: int) -> torch.Tensor:
        # per position (in blocks), not per batch: a rank's share of a global batch is the matching slice of
        # one process's batch, and a resume anywhere continues the same stream. The arithmetic below is
        # elementwise and correctly rounded, so it gives the same bits for a position in any batch.
        d = position_blocks(self.seed, SALTS["data"], position, n, self._block)
        return (self.modes[d[:, 0].long()] + d[:, 1:] * self.std).float()


@register(DATASETS, "ring")
class Ring(GaussianMixture2D):
    """8 Gaussians on the unit circle at angles 2*pi*k/8, std 0.01 (VEEGAN, Srivastava et al. 2017)."""

    modes = torch.tensor(
        [[math.cos(2 * math.pi * k / 8), math.sin(2 * math.pi * k / 8)] for k in range(8)],
        dtype=torch.float64,
    )
    std = 0.01


@register(DATASETS, "grid")
class Grid(GaussianMixture2D):
    """25 Gaussians centred on {-4,-2,0,2,4}^2, std 0.05 (VEEGAN / PacGAN, Lin et al. 2018)."""

    modes = torch.tensor([[x, y] for x in (-4, -2, 0, 2, 4) for y in (-4, -2, 0, 2, 4)], dtype=torch.float64)
    std = 0.05


@register(DATASETS, "procedural")
class Procedural(DataSource):
    """Deterministic synthetic RGB images at any resolution: a two-colour gradient with 1-3 discs or
    boxes. Image i depends only on i (not the training seed), so it is a fixed dataset of `size` images."""

    _DATASET_SEED = 20140610  # fixed: the content of image i is part of the dataset's definition

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.cfg.channels or 3, self.cfg.resolution, self.cfg.resolution)

    @property
    def size(self) -> int:
        return self.cfg.size

    def image(self, index: int) -> torch.Tensor:
        """Image `index` as [3, R, R] in [-1, 1]."""
        r = self.cfg.resolution
        g = position_generator(self._DATASET_SEED, index)
        ys, xs = torch.meshgrid(torch.linspace(0, 1, r), torch.linspace(0, 1, r), indexing="ij")
        c0, c1 = torch.rand(2, 3, 1, 1, generator=g)
        angle = float(torch.rand((), generator=g)) * 2 * math.pi
        t = (xs * math.cos(angle) + ys * math.sin(angle) + 1.5) / 3.0
        img = c0 * (1 - t) + c1 * t
        for _ in range(int(torch.randint(1, 4, (), generator=g))):
            cx, cy, size = torch.rand(3, generator=g).tolist()
            color = torch.rand(3, 1, 1, generator=g)
            size = 0.1 + 0.25 * size
            if torch.rand((), generator=g) < 0.5:
                mask = (xs - cx) ** 2 + (ys - cy) ** 2 < size**2
            else:
                mask = ((xs - cx).abs() < size) & ((ys - cy).abs() < size)
            img = torch.where(mask, color, img)
        return img * 2 - 1

    def _draw(self, position: int, n: int) -> torch.Tensor:

        idx = epoch_indices(self.cfg.size, self.seed, position, n)
        out = torch.stack([self.image(i) for i in idx])
        if self.shape[0] == 1:
            out = out.mean(dim=1, keepdim=True)
        return mirror(out, self.seed, position) if self.cfg.mirror else out
