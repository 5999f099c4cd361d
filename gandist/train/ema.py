"""Exponential moving average of the generator (Karras et al. 2018; Yazici et al. 2019)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps `shadow` = beta * shadow + (1 - beta) * model for parameters; buffers (batch-norm running
    statistics) are copied. beta=0 makes the shadow an exact copy."""

    def __init__(self, model: nn.Module, beta: float) -> None:
        self.beta = beta
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.lerp_(p.detach(), 1.0 - self.beta)
        for s, b in zip(self.shadow.buffers(), model.buffers()):
            s.copy_(b)
