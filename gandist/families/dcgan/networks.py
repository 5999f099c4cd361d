"""DCGAN (Radford et al. 2016): transposed-conv G with batch norm + ReLU and a tanh output; strided-conv
D with LeakyReLU 0.2 and batch norm, no pooling and no fully connected hidden layers.
Weights initialised from N(0, 0.02) (paper Sec. 4).

Packing (PacGAN, Lin et al. 2018, Sec. 3): with `model.pack` m > 1, D judges m samples at once,
concatenated along channels: a batch [N, C, H, W] is read as [N/m, m C, H, W] (samples i m .. i m + m - 1
form packed input i) and D returns N/m logits. Only the first convolution widens; the losses then pair
N/m packed reals with N/m packed fakes. Sample-wise penalties (R1, R2, WGAN-GP) differentiate through
the packing, so each sample keeps its own gradient."""

from __future__ import annotations

import math

import torch
from torch import nn

from gandist.families.dcgan.config import DCGANModel
from gandist.models.base import MODELS
from gandist.models.layers import MinibatchStdDev, output_activation
from gandist.registry import register


def _d_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # layer norm over (C, H, W): per-sample, safe for gradient penalties
    return nn.Identity()


class DCGANGenerator(nn.Module):
    def __init__(self, cfg: DCGANModel, shape: tuple[int, ...], kind: str) -> None:
        super().__init__()
        channels, res = shape[0], shape[1]
        n_up = int(math.log2(res // 4))
        width = cfg.g_width * 2 ** (n_up - 1)  # e.g. 64 px, g_width 64: 512 -> 256 -> 128 -> 64 -> C
        bn = cfg.g_norm == "batch"
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(
                cfg.z_dim, width, 4, 1, 0, bias=not bn
            ),  # 1x1 -> 4x4 (the "project and reshape")
            nn.BatchNorm2d(width) if bn else nn.Identity(),
            nn.ReLU(),
        ]
        for _ in range(n_up - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=not bn),
                nn.BatchNorm2d(width // 2) if bn else nn.Identity(),
                nn.ReLU(),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), output_activation(cfg.output, kind)]
        self.net = nn.Sequential(*layers)
        self.z_dim, self.shape = cfg.z_dim, tuple(shape)
        _init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.dim() == 2 and z.shape[1] == self.z_dim, f"G expects [N, {self.z_dim}], got {list(z.shape)}"
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    def __init__(self, cfg: DCGANModel, shape: tuple[int, ...]) -> None:
        super().__init__()
        channels, res = shape[0], shape[1]
        n_down = int(math.log2(res // 4))
        width = cfg.d_width
        self.pack = cfg.pack
        # No normalisation on the first layer (DCGAN Sec. 3: BN on D's input layer caused instability).
        layers: list[nn.Module] = [nn.Conv2d(channels * self.pack, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        for _ in range(n_down - 1):
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=cfg.d_norm != "batch"),
                _d_norm(cfg.d_norm, width * 2),
                nn.LeakyReLU(0.2),
            ]
            width *= 2
        self.n_hidden = len(layers)  # layers up to D's last hidden features (feature matching reads them)
        if cfg.minibatch_std:
            layers.append(MinibatchStdDev(cfg.minibatch_std))
            width += 1
        layers.append(nn.Conv2d(width, 1, 4, 1, 0))  # 4x4 -> 1x1 logit
        self.net = nn.Sequential(*layers)
        _init(self)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N / pack, pack C, H, W]: consecutive samples side by side along channels."""
        n, c, h, w = x.shape
        assert n % self.pack == 0, f"D packs {self.pack} samples per input; a batch of {n} does not divide"
        return x.reshape(n // self.pack, self.pack * c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] -> logits [N / pack]."""
        x = self.packed(x)
        return self.net(x).view(x.shape[0])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """D's last hidden layer (before minibatch std and the logit), flattened: [N / pack, F]."""
        x = self.packed(x)
        return self.net[: self.n_hidden](x).flatten(1)


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


@register(MODELS, "dcgan")
def build(cfg: DCGANModel, shape: tuple[int, ...], kind: str) -> dict[str, nn.Module]:
    return {"G": DCGANGenerator(cfg, shape, kind), "D": DCGANDiscriminator(cfg, shape)}
