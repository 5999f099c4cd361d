"""Noise injection + bias + leaky ReLU + gain, fused (StyleGAN's per-layer pre-normalisation epilogue).

    y = leaky_relu(x + strength[c] * noise[n, 0, h, w] + bias[c], negative_slope) * gain

x: [N, C, H, W]; noise: [N, 1, H, W] or None (skips the noise term); strength, bias: [C].
gain sqrt(2) keeps the activations' second moment under leaky ReLU (StyleGAN's def_gain).
"""

from __future__ import annotations

import math

from torch import Tensor

from . import _plane


def noise_bias_act_reference(
    x: Tensor, noise: Tensor | None, strength: Tensor | None, bias: Tensor,
    negative_slope: float = 0.2, gain: float = math.sqrt(2),
) -> Tensor:  # fmt: skip
    return _plane.plane_reference(
        x,
        noise=noise,
        strength=strength,
        bias=bias,
        negative_slope=negative_slope,
        gain=gain,
        act=True,
        norm=False,
    )


def noise_bias_act(
    x: Tensor, noise: Tensor | None, strength: Tensor | None, bias: Tensor,
    negative_slope: float = 0.2, gain: float = math.sqrt(2), impl: str = "auto",
) -> Tensor:  # fmt: skip
    return _plane.run(
        x, noise=noise, strength=strength, bias=bias, negative_slope=negative_slope, gain=gain, act=True,
        norm=False, impl=impl, op="noise_bias_act",
    )  # fmt: skip
