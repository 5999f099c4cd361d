"""Exponential moving average of a network (Karras et al. 2018; Yazici et al. 2019), with its decay as each
paper defines it: a constant per generator step (PGGAN, `train.ema_beta`) or a half-life in images
(StyleGAN, `train.ema_kimg`, with StyleGAN2-ADA's optional ramp-up `train.ema_rampup`)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from gandist.config import TrainConfig


class EMA:
    """`shadow` <- beta * shadow + (1 - beta) * model for parameters after every generator step; buffers
    (batch-norm running statistics, StyleGAN's w_avg) are copied. beta per step is either

      `step_beta`, the same every step whatever the batch (PGGAN's official train.py: G_smoothing 0.999,
        one update per minibatch; the batch changes per resolution, the decay does not), or
      0.5 ** (batch / half-life), the shadow forgetting half of its past every `half_life` images whatever
        the batch (StyleGAN's training_loop.py: G_smoothing_kimg 10), the half-life optionally ramped up as
        min(half_life, images seen x rampup) (StyleGAN2-ADA's ema_rampup 0.05). A half-life of 0 makes the
        shadow an exact copy."""

    def __init__(
        self, model: nn.Module, half_life: float = 0.0, rampup: float = 0.0, *, step_beta: float | None = None
    ) -> None:
        self.half_life, self.rampup = half_life, rampup  # images; ramp-up as a share of images seen
        self.step_beta = step_beta
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @classmethod
    def from_config(cls, model: nn.Module, train: TrainConfig) -> EMA:
        """The average `train` asks for: `ema_beta` per step or `ema_kimg` thousand images of half-life."""
        if train.ema_beta is not None:
            return cls(model, step_beta=train.ema_beta)
        return cls(model, (train.ema_kimg or 0.0) * 1000, train.ema_rampup)

    def beta(self, batch: int, images_seen: int) -> float:
        """The decay of this generator step, which showed `batch` images after `images_seen` in all."""
        if self.step_beta is not None:
            return self.step_beta
        half = self.half_life
        if self.rampup > 0:
            half = min(half, images_seen * self.rampup)
        return 0.5 ** (batch / half) if half > 0 else 0.0

    @torch.no_grad()
    def update(self, model: nn.Module, beta: float) -> None:
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.lerp_(p.detach(), 1.0 - beta)
        for s, b in zip(self.shadow.buffers(), model.buffers()):
            s.copy_(b)
