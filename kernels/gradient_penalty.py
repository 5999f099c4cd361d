"""Gradient penalty: mean over the batch of (||g_n||_2 - center)^2.

center=1 is WGAN-GP's two-sided penalty; center=0 is the mean squared norm that R1 uses.
"""

from __future__ import annotations

import torch


def gradient_penalty_reference(grad: torch.Tensor, center: float = 1.0) -> torch.Tensor:
    """grad: [N, ...] per-sample gradients; returns a 0-d tensor in grad's dtype (accumulates in fp32, or fp64 for fp64 input)."""
    acc = torch.float64 if grad.dtype == torch.float64 else torch.float32  # fp32 accumulation for 16-bit
    flat = grad.reshape(grad.shape[0], -1).to(acc)
    if center == 0.0:
        out = flat.square().sum(dim=1).mean()  # no sqrt: differentiable at g = 0
    else:
        out = (flat.square().sum(dim=1).sqrt() - center).square().mean()
    return out.to(grad.dtype)


def gradient_penalty(grad: torch.Tensor, center: float = 1.0, impl: str = "auto") -> torch.Tensor:
    if impl not in ("auto", "reference"):
        raise ValueError(f"gradient_penalty: impl must be 'auto' or 'reference', got '{impl}'")
    return gradient_penalty_reference(grad, center)
