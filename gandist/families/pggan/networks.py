"""PGGAN (Karras et al. 2018, "Progressive Growing of GANs", Sec. 3-4, Appendix A, Table 2): G and D
that grow from 4x4 to the final resolution R by fading in one block at a time.

Both networks are built at full size once; `set_growth(resolution, alpha)` decides which blocks run.
At a transition to resolution r (alpha < 1) the new block is faded in (Sec. 3, Fig. 2):

    G: (1 - alpha) * upsample(toRGB_{r/2}(h)) + alpha * toRGB_r(block_r(h))
    D: (1 - alpha) * fromRGB_{r/2}(avgpool(x)) + alpha * block_r(fromRGB_r(x)), then the blocks below r

Blocks above the current resolution do not run and get no gradient; neither does the old toRGB/fromRGB
once alpha reaches 1 (`set_growth(r, 1.0)`). Alpha lives in a 0-dim buffer updated in place (no
recompilation under torch.compile, copied with the other buffers by EMA); the resolution and whether a
fade is running are plain attributes set only by `set_growth`, so call it on every copy (G and G_ema)
at every change of stage.

Widths follow the official code (tkarras/progressive_growing_of_gans networks.py, fmap_decay 1):
nf(r) = min(int(fmap_base / 2^(log2 r - 1)), fmap_max). Every weight is N(0, 1) scaled at run time by
He's constant (equalized learning rate, Sec. 4.1); the layers do their own init.
The official code fuses upsample + conv and conv + downsample (`fused_scale`); the unfused order here
is the paper's Table 2 and has the same parameters.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gandist.families.pggan.config import PGGANModel
from gandist.models.base import MODELS
from gandist.models.growth import (
    LRELU_SLOPE,
    GrowthState,
    check_resolution,
    widths_per_resolution,
)
from gandist.models.layers import (
    Blur,
    EqualizedConv2d,
    EqualizedLinear,
    MinibatchStdDev,
    PixelNorm,
    avgpool2x,
    upsample2x,
)
from gandist.registry import register


def _lrelu() -> nn.Module:
    return nn.LeakyReLU(LRELU_SLOPE)


def _pixel_norm(on: bool) -> nn.Module:
    return PixelNorm() if on else nn.Identity()  # Sec. 4.2: G only, on z and after every conv


class _GInput(nn.Module):
    """G's 4x4 block (Table 2): z [N, z_dim] -> dense to 4x4xnf(4) -> lrelu -> PN -> conv 3x3 -> lrelu -> PN."""

    def __init__(self, z_dim: int, width: int, pixelnorm: bool, equalized: bool) -> None:
        super().__init__()
        self.width = width
        # Gain sqrt(2)/4 as the official code ("to match the original Theano implementation"). One bias per
        # channel, added after the reshape, as the official code and Table 2's "Conv 4x4" on a 1x1 latent.
        self.dense = EqualizedLinear(
            z_dim, width * 16, gain=math.sqrt(2) / 4, bias=False, equalized=equalized
        )
        self.bias = nn.Parameter(torch.zeros(width))
        self.act0, self.norm0 = _lrelu(), _pixel_norm(pixelnorm)
        self.conv = EqualizedConv2d(width, width, 3, equalized=equalized)
        self.act1, self.norm1 = _lrelu(), _pixel_norm(pixelnorm)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(z).view(z.shape[0], self.width, 4, 4) + self.bias[None, :, None, None]
        x = self.norm0(self.act0(x))
        return self.norm1(self.act1(self.conv(x)))


class _GBlock(nn.Module):
    """G's block at r > 4 (Table 2): upsample 2x -> conv 3x3 -> lrelu -> PN -> conv 3x3 -> lrelu -> PN.
    [N, nf(r/2), r/2, r/2] -> [N, nf(r), r, r]."""

    def __init__(self, in_channels: int, out_channels: int, pixelnorm: bool, equalized: bool) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, out_channels, 3, equalized=equalized)
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3, equalized=equalized)
        self.act, self.norm = _lrelu(), _pixel_norm(pixelnorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.act(self.conv0(upsample2x(x))))
        return self.norm(self.act(self.conv1(x)))


class PGGANGenerator(GrowthState):
    """z [N, z_dim] -> images [N, C, r, r] at the current resolution r (linear output, as the paper).

    `shape` is the final (C, R, R). Blocks: `blocks[i]` makes 4*2^i px, `to_rgb[i]` is its 1x1 toRGB (gain 1).
    """

    def __init__(
        self,
        z_dim: int,
        shape: tuple[int, int, int],
        *,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        normalize_latents: bool = True,
        pixelnorm: bool = True,
        equalized_lr: bool = True,
        output: str = "linear",
    ) -> None:
        super().__init__()
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"PGGAN makes square images (C, R, R), got shape {tuple(shape)}")
        channels, final = shape[0], shape[1]
        levels = check_resolution(final, "final resolution") - 1  # blocks 4x4 .. RxR
        nf = widths_per_resolution(final, fmap_base, fmap_max)
        self.z_dim, self.shape = z_dim, (channels, final, final)
        self._init_growth(final)
        self.normalize = _pixel_norm(normalize_latents)
        res = [4 * 2**i for i in range(levels)]
        self.blocks = nn.ModuleList(
            [_GInput(z_dim, nf[4], pixelnorm, equalized_lr)]
            + [_GBlock(nf[r // 2], nf[r], pixelnorm, equalized_lr) for r in res[1:]]
        )
        self.to_rgb = nn.ModuleList(
            [EqualizedConv2d(nf[r], channels, 1, gain=1.0, equalized=equalized_lr) for r in res]
        )
        if output not in ("linear", "tanh"):
            raise ValueError(f"output={output!r} must be 'linear' or 'tanh'")
        self.out = nn.Tanh() if output == "tanh" else nn.Identity()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.dim() == 2 and z.shape[1] == self.z_dim, f"G expects [N, {self.z_dim}], got {list(z.shape)}"
        stage = self.stage
        h = self.blocks[0](self.normalize(z))
        for i in range(1, stage):
            h = self.blocks[i](h)
        if stage == 0:
            img = self.to_rgb[0](h)
        elif self.fading:
            old = upsample2x(self.to_rgb[stage - 1](h))
            new = self.to_rgb[stage](self.blocks[stage](h))
            img = old + (new - old) * self.alpha  # lerp: exactly old at alpha 0 (official lerp_clip)
        else:
            img = self.to_rgb[stage](self.blocks[stage](h))
        return self.out(img)


class _DBlock(nn.Module):
    """D's block at r > 4, [N, nf(r), r, r] -> [N, nf(r/2), r/2, r/2].

    PGGAN (Table 2): conv 3x3 -> lrelu -> conv 3x3 -> lrelu -> 2x2 average pool.
    `blur=True`, StyleGAN (NVlabs/stylegan D_basic, `act(apply_bias(conv2d_downscale2d(blur(x))))`):
    conv 3x3 -> lrelu -> [1, 2, 1] blur -> conv 3x3 -> 2x2 average pool -> lrelu. The official
    conv2d_downscale2d, fused (a 4x4 stride-2 kernel) or not (conv, then downscale2d), pools before the bias
    and the activation; the bias commutes with the pool, the activation does not."""

    def __init__(self, in_channels: int, out_channels: int, equalized: bool, blur: bool = False) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, equalized=equalized)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, equalized=equalized)
        self.act = _lrelu()
        self.blur = Blur() if blur else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv0(x))
        if self.blur is None:
            return avgpool2x(self.act(self.conv1(x)))
        return self.act(avgpool2x(self.conv1(self.blur(x))))


class _DOutput(nn.Module):
    """D's 4x4 block (Table 2): minibatch stddev -> conv 3x3 -> lrelu -> dense (the 4x4 conv) -> lrelu
    -> dense to 1 (gain 1). [N, nf(4), 4, 4] -> [N] logits."""

    def __init__(self, width: int, hidden: int, mbstd_group: int, equalized: bool) -> None:
        super().__init__()
        # group 4 (Sec. 3 / Appendix A.1); 0 (or 1) = off, as the official `mbstd_group_size > 1`
        self.mbstd = MinibatchStdDev(mbstd_group) if mbstd_group > 1 else nn.Identity()
        self.conv = EqualizedConv2d(width + (mbstd_group > 1), width, 3, equalized=equalized)
        self.dense0 = EqualizedLinear(width * 16, hidden, equalized=equalized)
        self.dense1 = EqualizedLinear(hidden, 1, gain=1.0, equalized=equalized)
        self.act = _lrelu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv(self.mbstd(x)))
        x = self.act(self.dense0(x.flatten(1)))
        return self.dense1(x).view(x.shape[0])


class PGGANDiscriminator(GrowthState):
    """Images [N, C, r, r] at the current resolution r -> logits [N].

    `blocks[0]` is the 4x4 output block, `blocks[i]` (i >= 1) takes 4*2^i px to half that; `from_rgb[i]`
    is the 1x1 fromRGB + lrelu at 4*2^i px. `blur`: StyleGAN's blocks (blur before each downsampling
    conv, see `_DBlock`); the fade-in path's image downscale stays the box filter, as the official D_basic.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        *,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        mbstd_group: int = 4,
        equalized_lr: bool = True,
        blur: bool = False,
    ) -> None:
        super().__init__()
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"PGGAN takes square images (C, R, R), got shape {tuple(shape)}")
        channels, final = shape[0], shape[1]
        levels = check_resolution(final, "final resolution") - 1
        nf = widths_per_resolution(final, fmap_base, fmap_max)
        self.shape = (channels, final, final)
        self._init_growth(final)
        res = [4 * 2**i for i in range(levels)]
        self.blocks = nn.ModuleList(
            [_DOutput(nf[4], nf[2], mbstd_group, equalized_lr)]
            + [_DBlock(nf[r], nf[r // 2], equalized_lr, blur) for r in res[1:]]
        )
        self.from_rgb = nn.ModuleList(
            [
                nn.Sequential(EqualizedConv2d(channels, nf[r], 1, equalized=equalized_lr), _lrelu())
                for r in res
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        assert x.dim() == 4 and tuple(x.shape[1:]) == (self.shape[0], r, r), (
            f"D at {r}x{r} expects [N, {self.shape[0]}, {r}, {r}], got {list(x.shape)}"
        )
        stage = self.stage
        h = self.from_rgb[stage](x)
        if stage > 0:
            h = self.blocks[stage](h)
            if self.fading:
                old = self.from_rgb[stage - 1](avgpool2x(x))
                h = old + (h - old) * self.alpha  # exactly the previous stage's D at alpha 0
        for i in range(stage - 1, 0, -1):
            h = self.blocks[i](h)
        return self.blocks[0](h)


@register(MODELS, "pggan")
def build(cfg: PGGANModel, shape: tuple[int, ...], kind: str) -> dict[str, nn.Module]:
    if kind != "images" or len(shape) != 3:
        raise ValueError(f"PGGAN needs images (C, R, R), got {kind} of shape {tuple(shape)}")
    widths = dict(fmap_base=cfg.fmap_base, fmap_max=cfg.fmap_max, equalized_lr=cfg.equalized_lr)
    G = PGGANGenerator(
        cfg.z_dim,
        shape,
        normalize_latents=cfg.normalize_latents,
        pixelnorm=cfg.pixelnorm,
        output=cfg.output,
        **widths,
    )
    return {"G": G, "D": PGGANDiscriminator(shape, mbstd_group=cfg.mbstd_group, **widths)}
