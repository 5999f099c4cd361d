"""The multilayer-perceptron GAN of Goodfellow et al. 2014: ReLU generator, maxout + dropout
discriminator. Also the standard network of the 2-D mixture benchmarks (VEEGAN, PacGAN)."""

from __future__ import annotations

import math

import torch
from torch import nn

from gandist.families.mlp.config import MLPModel
from gandist.models.base import MODELS
from gandist.models.layers import Maxout, MinibatchStdDev, output_activation
from gandist.registry import register


class MLPGenerator(nn.Module):
    def __init__(self, cfg: MLPModel, shape: tuple[int, ...], kind: str) -> None:
        super().__init__()
        self.z_dim, self.shape = cfg.z_dim, tuple(shape)
        layers: list[nn.Module] = []
        width = cfg.z_dim
        for _ in range(cfg.g_layers):
            layers.append(nn.Linear(width, cfg.g_width))
            if cfg.g_norm == "batch":
                layers.append(nn.BatchNorm1d(cfg.g_width))
            layers.append(nn.ReLU())
            width = cfg.g_width
        layers += [nn.Linear(width, math.prod(shape)), output_activation(cfg.output, kind)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.dim() == 2 and z.shape[1] == self.z_dim, f"G expects [N, {self.z_dim}], got {list(z.shape)}"
        return self.net(z).view(z.shape[0], *self.shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, cfg: MLPModel, shape: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(shape)
        for _ in range(cfg.d_layers):
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            if cfg.maxout_pieces > 0:
                layers.append(Maxout(width, cfg.d_width, cfg.maxout_pieces))
            else:
                layers += [nn.Linear(width, cfg.d_width), nn.LeakyReLU(0.2)]
            if cfg.d_norm == "layer":
                layers.append(nn.LayerNorm(cfg.d_width))
            elif cfg.d_norm == "batch":
                layers.append(nn.BatchNorm1d(cfg.d_width))
            width = cfg.d_width
        if cfg.minibatch_std:
            layers.append(MinibatchStdDev(cfg.minibatch_std))
            width += 1
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(x.shape[0])


@register(MODELS, "mlp")
def build(cfg: MLPModel, shape: tuple[int, ...], kind: str) -> dict[str, nn.Module]:
    return {"G": MLPGenerator(cfg, shape, kind), "D": MLPDiscriminator(cfg, shape)}
