"""Building blocks shared by the model families."""

from __future__ import annotations

import torch
from torch import nn


class MinibatchStdDev(nn.Module):
    """Append the mean standard deviation over groups of the minibatch as one extra feature
    (Karras et al. 2018, PGGAN Sec. 3). Gives D a direct view of sample diversity, which
    counteracts mode collapse. Works for [N, F] and [N, C, H, W] inputs.

    Group size G must divide N; every sample of a group receives its group's statistic.
    """

    def __init__(self, group_size: int) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        g = min(self.group_size, n)
        if n % g:
            raise ValueError(f"minibatch std: batch {n} is not divisible by group size {g}")
        y = x.reshape(g, n // g, *x.shape[1:])  # [G, M, ...]: sample i is in group i % M
        y = y - y.mean(dim=0, keepdim=True)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [M, ...] std over the group
        y = y.reshape(n // g, -1).mean(dim=1)  # [M] averaged over features and pixels
        y = y.repeat(g)  # [N]
        if x.dim() == 2:
            return torch.cat([x, y[:, None]], dim=1)
        return torch.cat([x, y[:, None, None, None].expand(n, 1, *x.shape[2:])], dim=1)


class Maxout(nn.Module):
    """Linear layer followed by a max over `pieces` linear pieces (Goodfellow et al. 2013)."""

    def __init__(self, in_features: int, out_features: int, pieces: int) -> None:
        super().__init__()
        self.pieces = pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y.view(x.shape[0], -1, self.pieces).amax(dim=2)


def output_activation(name: str, kind: str) -> nn.Module:
    """G's output nonlinearity. 'auto': tanh for images in [-1, 1], identity for 2-D points."""
    if name == "auto":
        name = "tanh" if kind == "images" else "linear"
    return {"tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "linear": nn.Identity()}[name]
