"""scikit-learn's 8x8 handwritten digits (1797 images, shipped with scikit-learn: no download)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gandist.data.base import DATASETS, Batch, DataSource, epoch_indices, mirror
from gandist.data.config import DigitsData
from gandist.registry import register

_CACHE: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def load_digits_tensor(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All digits as [1797, 1, R, R] in [-1, 1] (bilinear upsampling of the 0..16 grey levels) and labels."""
    if resolution not in _CACHE:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0  # [N, 1, 8, 8] in [0, 1]
        if resolution != 8:
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
        _CACHE[resolution] = ((x.clamp(0, 1) * 2 - 1).contiguous(), torch.tensor(bunch.target))
    return _CACHE[resolution]


@register(DATASETS, "digits")
class Digits(DataSource):
    def __init__(self, cfg: DigitsData, seed: int) -> None:
        super().__init__(cfg, seed)
        self.images, self.labels = load_digits_tensor(cfg.resolution)

    @property
    def shape(self) -> tuple[int, ...]:
        return (1, self.cfg.resolution, self.cfg.resolution)

    @property
    def size(self) -> int:
        return len(self.images)

    def _draw(self, position: int, n: int) -> torch.Tensor:
        return self._draw_batch(position, n).x

    def _draw_batch(self, position: int, n: int) -> Batch:
        idx = epoch_indices(len(self.images), self.seed, position, n)
        out = self.images[idx]
        return Batch(mirror(out, self.seed, position) if self.cfg.mirror else out, labels=self.labels[idx])
