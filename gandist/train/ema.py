"""Exponential moving average of a network (Karras et al. 2018; Yazici et al. 2019), with the
half-life in images of StyleGAN2 (`ema_kimg`) and its optional ramp-up (`ema_rampup`)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """`shadow` <- beta * shadow + (1 - beta) * model for parameters, beta = 0.5 ** (batch / half-life),
    so the shadow forgets half of its past every `half_life` images whatever the batch size; buffers
    (batch-norm running statistics) are copied. A half-life of 0 makes the shadow an exact copy."""

    def __init__(self, model: nn.Module, half_life: float, rampup: float = 0.0) -> None:
        self.half_life, self.rampup = half_life, rampup  # images; ramp-up as a share of images seen
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    def beta(self, batch: int, images_seen: int) -> float:
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
