"""CycleGAN's networks (Zhu et al. 2017, Appendix 7.2; the official junyanz/pytorch-CycleGAN-and-pix2pix
`ResnetGenerator` and `NLayerDiscriminator`): G is Johnson et al.'s ResNet translator, D the 70x70 PatchGAN
of pix2pix. Instance norm without affine parameters, as the official `--norm instance`; weights N(0, 0.02)."""

from __future__ import annotations

import torch
from torch import nn

from gandist.families.cyclegan.config import CycleGANModel
from gandist.models.base import MODELS
from gandist.registry import register


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class ResnetBlock(nn.Module):
    """x + [reflect pad 1, conv 3x3, IN, ReLU, reflect pad 1, conv 3x3, IN](x)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=True), _norm(ch), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3, bias=True), _norm(ch),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """[N, C, H, W] in [-1, 1] -> [N, C, H, W] in [-1, 1]; H and W multiples of 4 (two stride-2 stages)."""

    def __init__(self, channels: int, width: int, blocks: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(channels, width, 7),
            _norm(width),
            nn.ReLU(True),
        ]
        ch = width
        for _ in range(2):  # d128, d256
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), _norm(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch) for _ in range(blocks)]
        for _ in range(2):  # u128, u64
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1), _norm(ch // 2),
                       nn.ReLU(True)]  # fmt: skip
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.dim() == 4 and x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0, (
            f"G expects [N, C, 4k, 4m], got {list(x.shape)}"
        )
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """[N, C, H, W] -> a map of patch logits [N, 1, H', W'] (70x70 receptive fields with 3 layers)."""

    def __init__(self, channels: int, width: int, n_layers: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = width
        for i in range(1, n_layers + 1):
            out = width * min(2**i, 8)
            stride = 2 if i < n_layers else 1  # the last C512 keeps the resolution
            layers += [nn.Conv2d(ch, out, 4, stride, 1), _norm(out), nn.LeakyReLU(0.2, True)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)  # the official init_type normal, gain 0.02
            nn.init.zeros_(m.bias)


@register(MODELS, "cyclegan")
def build(cfg: CycleGANModel, shape: tuple[int, ...], kind: str) -> dict[str, nn.Module]:
    c = shape[0]
    nets = {
        "G_AB": ResnetGenerator(c, cfg.g_width, cfg.blocks),
        "G_BA": ResnetGenerator(c, cfg.g_width, cfg.blocks),
        "D_A": PatchDiscriminator(c, cfg.d_width, cfg.d_layers),
        "D_B": PatchDiscriminator(c, cfg.d_width, cfg.d_layers),
    }
    for net in nets.values():
        _init(net)
    return nets
