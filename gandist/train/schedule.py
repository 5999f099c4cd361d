"""The growth schedule (progressive growing, Karras et al. 2018, Sec. 3): a pure function of images seen.

With `schedule.kind: progressive` a run starts at `schedule.start_resolution` and doubles its resolution
up to `data.resolution` in phases measured in real images shown to D:

    stable at start | fade to 2x start | stable at 2x start | fade to 4x start | ... | stable at R (to the end)
       stable_kimg        fade_kimg           stable_kimg          fade_kimg

During a fade the new blocks of G and D are blended in with alpha rising linearly from 0 to 1 over the
phase (Sec. 3, Fig. 2), and the reals D sees are blended the same way (`fade_reals`). Each resolution
may have its own batch size and learning rate (the official code's minibatch and lrate dicts). Because
every value is a function of the image count alone, a run resumed anywhere, mid-fade included, continues
exactly as an uninterrupted one. With `schedule.kind: fixed` (the default) there is one stable phase at
`data.resolution` with the configured batch size and learning rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gandist.config import Config


@dataclass(frozen=True)
class Stage:
    resolution: int  # the resolution G makes and D sees
    alpha: float  # fade-in of the newest block: 1 when stable
    phase: str  # "stable" or "fade"
    index: int  # phase number: 0 the first stable phase, then fade, stable, fade, ...
    start_nimg: int  # images seen when this phase began
    end_nimg: int | None  # images seen when it ends (None: the last phase runs to the end)
    batch: int  # real images per D step
    lr_g: float
    lr_d: float

    @property
    def key(self) -> tuple[int, str]:
        """Changes exactly when the level of detail starts or stops changing (a phase boundary)."""
        return self.resolution, self.phase

    def describe(self) -> str:
        if self.phase == "fade":
            return f"{self.resolution}px fade-in {self.alpha:.2f}"
        return f"{self.resolution}px"


class Schedule:
    def __init__(self, cfg: Config) -> None:
        s = cfg.schedule
        self.progressive = s.kind == "progressive"
        self.final = getattr(cfg.data, "resolution", 0)
        self.start = s.start_resolution if self.progressive else self.final
        self.stable = round(s.stable_kimg * 1000)
        self.fade = round(s.fade_kimg * 1000)
        self.batches, self.lrs = dict(s.batch), dict(s.lr)
        self.default_batch, self.lr_g, self.lr_d = cfg.data.batch_size, cfg.optim.lr_g, cfg.optim.lr_d
        self.levels = int(math.log2(self.final // self.start)) if self.progressive else 0

    def _stage(
        self, resolution: int, alpha: float, phase: str, index: int, start: int, end: int | None
    ) -> Stage:
        batch = self.batches.get(resolution, self.default_batch)
        lr = self.lrs.get(resolution)
        lr_g, lr_d = (lr, lr) if lr is not None else (self.lr_g, self.lr_d)
        return Stage(resolution, alpha, phase, index, start, end, batch, lr_g, lr_d)

    def at(self, nimg: int) -> Stage:
        """The stage of the step that starts after `nimg` real images."""
        if not self.progressive:
            return self._stage(self.final, 1.0, "stable", 0, 0, None)
        if nimg < self.stable or self.levels == 0:
            return self._stage(self.start, 1.0, "stable", 0, 0, self.stable if self.levels else None)
        period = self.fade + self.stable
        level, offset = divmod(nimg - self.stable, period)
        if level >= self.levels:  # the final resolution's stable phase runs to the end
            start = self.stable + self.levels * period - self.stable
            return self._stage(self.final, 1.0, "stable", 2 * self.levels, start, None)
        resolution = self.start * 2 ** (level + 1)
        begin = self.stable + level * period
        if offset < self.fade:
            return self._stage(
                resolution, offset / self.fade, "fade", 2 * level + 1, begin, begin + self.fade
            )
        end = begin + period if level + 1 < self.levels else None
        return self._stage(resolution, 1.0, "stable", 2 * level + 2, begin + self.fade, end)

    def final_nimg(self) -> int:
        """Images seen when the final resolution is first stable."""
        return self.stable + self.levels * (self.fade + self.stable) - self.stable if self.progressive else 0

    def describe(self) -> dict:
        return {
            "kind": "progressive" if self.progressive else "fixed",
            "start_resolution": self.start,
            "final_resolution": self.final,
            "stable_nimg": self.stable,
            "fade_nimg": self.fade,
        }


def downsample(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Box-filter images [N, C, R, R] down to `resolution` (a power-of-two fraction of R): the mip-maps
    the paper trains on (each output pixel is the mean of an f x f block)."""
    factor = x.shape[-1] // resolution
    if factor == 1:
        return x
    if x.shape[-1] != resolution * factor:
        raise ValueError(f"cannot box-filter {x.shape[-1]} px to {resolution} px")
    return F.avg_pool2d(x, factor)


def fade_reals(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """During a fade to resolution r, the reals D sees are blended like G's output: alpha x the r-pixel
    image + (1 - alpha) x its r/2-pixel box-filtered version, upsampled (nearest). Exactly x at alpha 1."""
    if alpha >= 1.0:
        return x
    low = F.avg_pool2d(x, 2).repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    return low + (x - low) * alpha
