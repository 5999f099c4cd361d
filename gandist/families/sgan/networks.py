"""The semi-supervised GAN's networks (Salimans et al. 2016, Sec. 5, and their code's permutation-invariant
MNIST models): an MLP G with batch norm, optionally fed a one-hot class (class-conditional); an MLP D with
Gaussian noise on its input and hidden layers whose head gives K class logits (the fake class implicit,
its logit fixed at 0) or K + 1 (the last one "fake", Odena 2016). D exposes its last hidden layer for
feature matching (Salimans et al. Sec. 3.1)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gandist.families.sgan.config import SGANModel
from gandist.models.base import MODELS
from gandist.models.layers import output_activation
from gandist.registry import register


def classes_of(z: torch.Tensor, classes: int) -> torch.Tensor:
    """The class a latent asks for when none is given: floor(K * Phi(z[:, 0])), uniform over the K classes
    for z ~ N(0, I) and a function of z alone (so sample i is the same in any batch). [N, D] -> [N] int64."""
    u = 0.5 * (1 + torch.erf(z[:, 0].float() / math.sqrt(2)))
    return (u * classes).long().clamp_(0, classes - 1)


class SGANGenerator(nn.Module):
    def __init__(self, cfg: SGANModel, shape: tuple[int, ...], kind: str) -> None:
        super().__init__()
        self.z_dim, self.shape, self.classes, self.conditional = (
            cfg.z_dim,
            tuple(shape),
            cfg.classes,
            cfg.conditional,
        )
        width = cfg.z_dim + (cfg.classes if cfg.conditional else 0)
        layers: list[nn.Module] = []
        for _ in range(cfg.g_layers):
            layers += [nn.Linear(width, cfg.g_width), nn.BatchNorm1d(cfg.g_width), nn.ReLU()]
            width = cfg.g_width
        layers += [nn.Linear(width, math.prod(shape)), output_activation("auto", kind)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z [N, z_dim], labels [N] int64 (conditional G; None: the class `classes_of(z)`) -> [N, *shape]."""
        assert z.dim() == 2 and z.shape[1] == self.z_dim, f"G expects [N, {self.z_dim}], got {list(z.shape)}"
        if self.conditional:
            labels = classes_of(z, self.classes) if labels is None else labels
            z = torch.cat([z, F.one_hot(labels, self.classes).to(z.dtype)], dim=1)
        return self.net(z).view(z.shape[0], *self.shape)


class GaussianNoise(nn.Module):
    """x + N(0, std^2) in training mode (from the global RNG, which checkpoints keep); identity in eval."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.std * torch.randn_like(x) if self.training and self.std > 0 else x


class SGANDiscriminator(nn.Module):
    def __init__(self, cfg: SGANModel, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.classes = cfg.classes
        self.outputs = cfg.classes + (1 if cfg.fake_logit == "explicit" else 0)
        layers: list[nn.Module] = [nn.Flatten(), GaussianNoise(cfg.d_input_noise)]
        width = math.prod(shape)
        for _ in range(cfg.d_layers):
            layers += [nn.Linear(width, cfg.d_width), nn.LeakyReLU(0.2), GaussianNoise(cfg.d_hidden_noise)]
            width = cfg.d_width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(width, self.outputs)

    def forward(self, x: torch.Tensor, with_features: bool = False):
        """x [N, *shape] -> logits [N, K] (implicit fake) or [N, K + 1]; with_features: also the last hidden
        layer [N, d_width] (feature matching)."""
        h = self.features(x)
        logits = self.head(h)
        return (logits, h) if with_features else logits


@register(MODELS, "sgan")
def build(cfg: SGANModel, shape: tuple[int, ...], kind: str) -> dict[str, nn.Module]:
    return {"G": SGANGenerator(cfg, shape, kind), "D": SGANDiscriminator(cfg, shape)}
