"""StyleGAN's whole per-layer epilogue in one pass: noise + bias + leaky ReLU + gain, then AdaIN.

    t = leaky_relu(x + strength[c] * noise[n, 0, h, w] + bias[c], negative_slope) * gain
    y = (t - mean_hw t) / sqrt(var_hw t + eps) * scale[n, c] + style_bias[n, c]

Eager PyTorch makes about 13 passes over the activation for this; the fused kernel reads x (and the
noise) once or twice and writes y once.
"""

from __future__ import annotations

import math

from torch import Tensor

from . import _plane


def styled_epilogue_reference(
    x: Tensor, noise: Tensor | None, strength: Tensor | None, bias: Tensor, scale: Tensor, style_bias: Tensor,
    negative_slope: float = 0.2, gain: float = math.sqrt(2), eps: float = 1e-8,
) -> Tensor:  # fmt: skip
    return _plane.plane_reference(
        x, noise=noise, strength=strength, bias=bias, scale=scale, style_bias=style_bias,
        negative_slope=negative_slope, gain=gain, eps=eps, act=True, norm=True,
    )  # fmt: skip


def styled_epilogue(
    x: Tensor, noise: Tensor | None, strength: Tensor | None, bias: Tensor, scale: Tensor, style_bias: Tensor,
    negative_slope: float = 0.2, gain: float = math.sqrt(2), eps: float = 1e-8, impl: str = "auto",
) -> Tensor:  # fmt: skip
    return _plane.run(
        x, noise=noise, strength=strength, bias=bias, scale=scale, style_bias=style_bias,
        negative_slope=negative_slope, gain=gain, eps=eps, act=True, norm=True, impl=impl, op="styled_epilogue",
    )  # fmt: skip
