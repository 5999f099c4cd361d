"""Adaptive instance normalisation (Huang & Belongie 2017; StyleGAN's AdaIN).

    y[n, c] = (x[n, c] - mean_hw x[n, c]) / sqrt(var_hw x[n, c] + eps) * scale[n, c] + bias[n, c]

x: [N, C, H, W] (contiguous or channels_last, fp32/bf16/fp16); scale, bias: [N, C]. The variance is
the biased one (divide by H*W), as instance normalisation defines it. Output in x's dtype.
"""

from __future__ import annotations

from torch import Tensor

from . import _plane


def adain_reference(x: Tensor, scale: Tensor, bias: Tensor, eps: float = 1e-8) -> Tensor:
    return _plane.plane_reference(x, scale=scale, style_bias=bias, eps=eps, act=False, norm=True)


def adain(x: Tensor, scale: Tensor, bias: Tensor, eps: float = 1e-8, impl: str = "auto") -> Tensor:
    return _plane.run(x, scale=scale, style_bias=bias, eps=eps, act=False, norm=True, impl=impl, op="adain")
