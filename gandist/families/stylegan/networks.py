"""StyleGAN (Karras et al. 2019, "A Style-Based Generator Architecture for GANs", Sec. 2-3, Appendix C),
growing progressively like PGGAN (the paper's FFHQ/CelebA-HQ networks at up to 1024x1024).

G = synthesis(mapping(z)):

  mapping    z [N, z_dim] -> pixel norm -> 8 x (equalised dense, leaky ReLU 0.2), learning rate x 0.01 -> w [N, w_dim]
  synthesis  a learned constant [nf(4), 4, 4], then per resolution r two layers (the first one at 4x4 has
             no convolution): [upsample 2x (r > 4, first layer)] -> conv 3x3 -> [blur] -> epilogue, where
             epilogue = noise (a per-pixel image times a learned per-channel strength) + bias -> leaky ReLU 0.2
             -> AdaIN with the style (scale, bias) = A_l(w_l) of a learned affine per layer (scale bias 1).
             toRGB (1x1, linear) per resolution; growth and fade-in exactly as PGGAN (`gandist.models.growth.GrowthState`).

Layer l (0 .. 2 log2(R) - 3) of the synthesis takes its own w_l, so styles can differ per layer:
layers 2k and 2k + 1 work at 4 * 2^k px. The epilogue runs as one fused op
(`gandist.kernels.styled_epilogue`, Triton on CUDA, its pure-torch reference elsewhere; `impl` from
`model.epilogue_impl`), whose backward is differentiable again (R1). Leaky ReLU carries no gain: the
instance normalisation that follows removes any scale, and the official code puts sqrt(2) into the
convolution weights instead (He's constant), as here.

In training mode G also (i) tracks w_avg, the moving average of w (beta 0.995 per pass), and (ii) mixes
styles (Sec. 3.1): with probability 0.9 a second latent takes over from a random crossover layer on,
once per batch as the official code. Both use the global RNG (in every checkpoint), as the noise does.
In eval mode (G_ema, `gandist generate`) neither happens and the noise is `model.sample_noise`.
The truncation trick (Sec. 3.1 / Appendix B) is `forward(z, truncation_psi, truncation_cutoff)`:
w_l <- w_avg + psi (w_l - w_avg) for layers l < cutoff.

Source of the defaults: NVlabs/stylegan networks_stylegan.py (G_style, G_mapping, G_synthesis).
D is PGGAN's (minibatch stddev, fromRGB per resolution, fade-in) with the official StyleGAN D_basic's
blocks (`model.d_blur`, on by default): conv -> lrelu -> [1, 2, 1] blur -> conv -> 2x2 average pool -> lrelu.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gandist.families.pggan.networks import PGGANDiscriminator
from gandist.families.stylegan.config import StyleGANModel
from gandist.kernels import styled_epilogue
from gandist.models.base import MODELS
from gandist.models.growth import LRELU_SLOPE, GrowthState, check_resolution, widths_per_resolution
from gandist.models.layers import (
    EqualizedConv2d,
    EqualizedLinear,
    PixelNorm,
    binomial_kernel,
    blur2d,
    upsample2x,
)
from gandist.registry import register

NOISE_MODES = ("random", "const", "none")
ADAIN_EPS = 1e-8  # instance_norm epsilon of the official code


class MappingNetwork(nn.Module):
    """z [N, z_dim] -> w [N, w_dim]: pixel norm, then `layers` equalised dense layers each followed by
    leaky ReLU 0.2 (the last one too, as the official G_mapping), all with learning-rate multiplier
    `lr_mul` (Appendix C: 0.01)."""

    def __init__(
        self, z_dim: int, w_dim: int, layers: int = 8, width: int = 512, lr_mul: float = 0.01
    ) -> None:
        super().__init__()
        self.z_dim, self.w_dim = z_dim, w_dim
        self.normalize = PixelNorm()
        dims = [z_dim] + [width] * (layers - 1) + [w_dim]
        self.layers = nn.ModuleList(EqualizedLinear(a, b, lr_mul=lr_mul) for a, b in zip(dims[:-1], dims[1:]))
        self.act = nn.LeakyReLU(LRELU_SLOPE)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.dim() == 2 and z.shape[1] == self.z_dim, (
            f"mapping expects [N, {self.z_dim}], got {list(z.shape)}"
        )
        x = self.normalize(z)
        for layer in self.layers:
            x = self.act(layer(x))
        return x


class StyleLayer(nn.Module):
    """One synthesis layer at `resolution` px: [upsample 2x] -> [conv 3x3] -> [blur] -> styled epilogue.
    x [N, in_channels, r', r'] and w [N, w_dim] -> [N, out_channels, r, r]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        *,
        conv: bool = True,
        up: bool = False,
        blur: bool = False,
        noise: bool = True,
    ) -> None:
        super().__init__()
        self.channels, self.resolution, self.up = out_channels, resolution, up
        # no bias in the convolution: the epilogue adds it (official apply_bias after apply_noise)
        self.conv = EqualizedConv2d(in_channels, out_channels, 3, bias=False) if conv else None
        if blur:
            self.register_buffer("blur_kernel", binomial_kernel(), persistent=False)
        else:
            self.blur_kernel = None
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if noise:  # strength starts at 0 (official apply_noise); one fixed noise image for noise_mode=const
            self.noise_strength = nn.Parameter(torch.zeros(out_channels))
            self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        else:
            self.noise_strength = None
        # A(w): style scale and bias, gain 1; the scale's bias starts at 1 (official style_mod's `+ 1`)
        self.affine = EqualizedLinear(w_dim, 2 * out_channels, gain=1.0)
        with torch.no_grad():
            self.affine.bias[:out_channels].fill_(1.0)

    def noise(self, x: torch.Tensor, mode: str) -> torch.Tensor | None:
        if self.noise_strength is None or mode == "none":
            return None
        n, _, h, w = x.shape
        if mode == "const":
            return self.noise_const.to(x.dtype).expand(n, 1, h, w)
        # drawn in fp32 whatever x's dtype: a run sees the same noise in any precision
        return torch.randn(n, 1, h, w, device=x.device).to(x.dtype)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str, impl: str) -> torch.Tensor:
        if self.conv is not None:
            if self.up:
                x = upsample2x(x)
            x = self.conv(x)
            if self.blur_kernel is not None:
                x = blur2d(x, self.blur_kernel)
        style = self.affine(w)
        c = self.channels
        return styled_epilogue(x, self.noise(x, noise_mode), self.noise_strength, self.bias, style[:, :c],
                               style[:, c:], negative_slope=LRELU_SLOPE, gain=1.0, eps=ADAIN_EPS,
                               impl=impl)  # fmt: skip


class _InputBlock(nn.Module):
    """4x4: the learned constant (ones, as the official code) -> epilogue (layer 0) -> conv -> epilogue (layer 1)."""

    def __init__(self, width: int, w_dim: int, noise: bool) -> None:
        super().__init__()
        self.const = nn.Parameter(torch.ones(1, width, 4, 4))
        self.layer0 = StyleLayer(width, width, w_dim, 4, conv=False, noise=noise)
        self.layer1 = StyleLayer(width, width, w_dim, 4, noise=noise)

    def forward(self, ws: torch.Tensor, noise_mode: str, impl: str) -> torch.Tensor:
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        x = self.layer0(x, ws[:, 0], noise_mode, impl)
        return self.layer1(x, ws[:, 1], noise_mode, impl)


class _Block(nn.Module):
    """r > 4: upsample -> conv -> [blur] -> epilogue (layer 2k), conv -> epilogue (layer 2k + 1)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, blur: bool,
                 noise: bool) -> None:  # fmt: skip
        super().__init__()
        self.layer0 = StyleLayer(
            in_channels, out_channels, w_dim, resolution, up=True, blur=blur, noise=noise
        )
        self.layer1 = StyleLayer(out_channels, out_channels, w_dim, resolution, noise=noise)

    def forward(self, x: torch.Tensor, w0: torch.Tensor, w1: torch.Tensor, noise_mode: str, impl: str):
        return self.layer1(self.layer0(x, w0, noise_mode, impl), w1, noise_mode, impl)


class SynthesisNetwork(GrowthState):
    """ws [N, num_layers, w_dim] -> images [N, C, r, r] at the current resolution r (linear output).

    `blocks[i]` makes 4 * 2^i px from layers 2i and 2i + 1; `to_rgb[i]` is its 1x1 toRGB (gain 1). Only
    the layers of the blocks that run read their w (`active_layers` of them)."""

    def __init__(
        self,
        w_dim: int,
        shape: tuple[int, int, int],
        *,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        blur: bool = True,
        noise: bool = True,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"StyleGAN makes square images (C, R, R), got shape {tuple(shape)}")
        channels, final = shape[0], shape[1]
        levels = check_resolution(final, "final resolution") - 1
        nf = widths_per_resolution(final, fmap_base, fmap_max)
        self.w_dim, self.shape, self.impl = w_dim, (channels, final, final), impl
        self.num_layers = 2 * levels
        self._init_growth(final)
        res = [4 * 2**i for i in range(levels)]
        self.blocks = nn.ModuleList(
            [_InputBlock(nf[4], w_dim, noise)]
            + [_Block(nf[r // 2], nf[r], w_dim, r, blur, noise) for r in res[1:]]
        )
        self.to_rgb = nn.ModuleList(EqualizedConv2d(nf[r], channels, 1, gain=1.0) for r in res)

    @property
    def active_layers(self) -> int:
        """Layers that run at the current stage (the fading block included)."""
        return 2 * (self.stage + 1)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        assert ws.dim() == 3 and ws.shape[1:] == (self.num_layers, self.w_dim), (
            f"synthesis expects [N, {self.num_layers}, {self.w_dim}], got {list(ws.shape)}"
        )
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode={noise_mode!r} must be one of {', '.join(NOISE_MODES)}")
        stage, impl = self.stage, self.impl
        h = self.blocks[0](ws, noise_mode, impl)
        for i in range(1, stage):
            h = self.blocks[i](h, ws[:, 2 * i], ws[:, 2 * i + 1], noise_mode, impl)
        if stage == 0:
            return self.to_rgb[0](h)
        new = self.to_rgb[stage](
            self.blocks[stage](h, ws[:, 2 * stage], ws[:, 2 * stage + 1], noise_mode, impl)
        )
        if not self.fading:
            return new
        old = upsample2x(self.to_rgb[stage - 1](h))
        return old + (new - old) * self.alpha  # exactly the previous stage at alpha 0, as PGGAN


class StyleGANGenerator(nn.Module):
    """z [N, z_dim] -> images [N, C, r, r]: `mapping`, then styles per layer, then `synthesis`.

    Growth is the synthesis network's (`set_growth`, `resolution`, `alpha` forward to it)."""

    def __init__(
        self,
        z_dim: int,
        shape: tuple[int, int, int],
        *,
        w_dim: int = 512,
        mapping_layers: int = 8,
        mapping_width: int = 512,
        mapping_lr_mul: float = 0.01,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        style_mixing: float = 0.9,
        w_avg_beta: float = 0.995,
        noise: bool = True,
        blur: bool = True,
        impl: str = "auto",
        sample_noise: str = "const",
    ) -> None:
        super().__init__()
        if not 0.0 <= style_mixing <= 1.0:
            raise ValueError(f"style_mixing={style_mixing} is a probability: it must be in [0, 1]")
        if sample_noise not in NOISE_MODES:
            raise ValueError(f"sample_noise={sample_noise!r} must be one of {', '.join(NOISE_MODES)}")
        self.z_dim, self.w_dim = z_dim, w_dim
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, mapping_width, mapping_lr_mul)
        self.synthesis = SynthesisNetwork(w_dim, shape, fmap_base=fmap_base, fmap_max=fmap_max, blur=blur,
                                          noise=noise, impl=impl)  # fmt: skip
        self.shape, self.num_layers = self.synthesis.shape, self.synthesis.num_layers
        self.style_mixing, self.w_avg_beta, self.sample_noise = style_mixing, w_avg_beta, sample_noise
        self.register_buffer("w_avg", torch.zeros(w_dim))

    # -- growth (the synthesis network's) ---------------------------------------------------------
    def set_growth(self, resolution: int, alpha: float) -> None:
        self.synthesis.set_growth(resolution, alpha)

    @property
    def resolution(self) -> int:
        return self.synthesis.resolution

    @property
    def alpha(self) -> torch.Tensor:
        return self.synthesis.alpha

    @property
    def active_layers(self) -> int:
        return self.synthesis.active_layers

    # -- styles ------------------------------------------------------------------------------------
    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """w [N, w_dim] -> ws [N, num_layers, w_dim], the same w for every layer."""
        return w[:, None, :].expand(w.shape[0], self.num_layers, self.w_dim)

    def check_truncation(self, psi: float, cutoff: int | None) -> None:
        """ValueError (one line) for a cutoff that names no layer or lies past the layers that run."""
        if not math.isfinite(psi):
            raise ValueError(f"truncation psi={psi} must be a finite number")
        layers = self.active_layers
        if cutoff is not None and not 1 <= cutoff <= layers:
            raise ValueError(
                f"truncation cutoff {cutoff} is past the {layers} style layers of this generator at "
                f"{self.resolution}x{self.resolution}; use 1..{layers} (layers below the cutoff are truncated)"
            )

    def truncate(self, ws: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
        """The truncation trick: w_l <- w_avg + psi (w_l - w_avg) for layers l < cutoff (all if None)."""
        self.check_truncation(psi, cutoff)
        if psi == 1.0:
            return ws
        cutoff = self.num_layers if cutoff is None else cutoff
        truncated = torch.lerp(self.w_avg.to(ws.dtype).expand_as(ws), ws, psi)
        layer = torch.arange(self.num_layers, device=ws.device)[None, :, None]
        return torch.where(layer < cutoff, truncated, ws)

    def mix(self, ws: torch.Tensor, w2: torch.Tensor, crossover: torch.Tensor | int) -> torch.Tensor:
        """Layers l < crossover keep ws, layers from the crossover on take w2 [N, w_dim]."""
        layer = torch.arange(self.num_layers, device=ws.device)[None, :, None]
        return torch.where(layer < crossover, ws, w2[:, None, :].to(ws.dtype))

    def _random_mix(self, ws: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Style mixing regularisation (Sec. 3.1): with probability `style_mixing` the layers from a random
        crossover in [1, active layers) take the w of a second latent; drawn on the device, no host sync."""
        n, device = ws.shape[0], ws.device
        w2 = self.mapping(torch.randn(n, self.z_dim, device=device).to(z.dtype))  # fp32 draw, as the noise
        crossover = torch.randint(1, max(self.active_layers, 2), (), device=device)
        crossover = torch.where(torch.rand((), device=device) < self.style_mixing, crossover, self.num_layers)
        return self.mix(ws, w2, crossover)

    @torch.no_grad()
    def _track_w_avg(self, w: torch.Tensor) -> None:
        # w_avg <- lerp(mean_batch(w), w_avg, beta): the official G_style's dlatent_avg update
        self.w_avg.copy_(torch.lerp(w.detach().to(self.w_avg.dtype).mean(dim=0), self.w_avg, self.w_avg_beta))

    def forward(
        self,
        z: torch.Tensor,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str | None = None,
    ) -> torch.Tensor:
        assert z.dim() == 2 and z.shape[1] == self.z_dim, f"G expects [N, {self.z_dim}], got {list(z.shape)}"
        w = self.mapping(z)
        if self.training:
            self._track_w_avg(w)
        ws = self.broadcast(w)
        if self.training and self.style_mixing > 0:
            ws = self._random_mix(ws, z)
        ws = self.truncate(ws, truncation_psi, truncation_cutoff)
        if noise_mode is None:
            noise_mode = "random" if self.training else self.sample_noise
        return self.synthesis(ws, noise_mode)


@register(MODELS, "stylegan")
def build(cfg: StyleGANModel, shape: tuple[int, ...], kind: str) -> dict[str, nn.Module]:
    if kind != "images" or len(shape) != 3:
        raise ValueError(f"StyleGAN needs images (C, R, R), got {kind} of shape {tuple(shape)}")
    G = StyleGANGenerator(
        cfg.z_dim,
        shape,
        w_dim=cfg.w_dim,
        mapping_layers=cfg.mapping_layers,
        mapping_width=cfg.mapping_width,
        mapping_lr_mul=cfg.mapping_lr_mul,
        fmap_base=cfg.fmap_base,
        fmap_max=cfg.fmap_max,
        style_mixing=cfg.style_mixing,
        w_avg_beta=cfg.w_avg_beta,
        noise=cfg.noise,
        blur=cfg.blur,
        impl=cfg.epilogue_impl,
        sample_noise=cfg.sample_noise,
    )
    D = PGGANDiscriminator(shape, fmap_base=cfg.fmap_base, fmap_max=cfg.fmap_max, mbstd_group=cfg.mbstd_group,
                           blur=cfg.d_blur)  # fmt: skip
    return {"G": G, "D": D}
