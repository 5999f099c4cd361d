"""Gradient penalty: the mean over the batch of (||g_n||_2 - center)^2.

center=1 is WGAN-GP's two-sided penalty (Gulrajani et al. 2017); center=0 is the mean squared norm
that R1 uses (Mescheder et al. 2018), computed without the square root so it stays differentiable at
g = 0. grad: [N, ...] per-sample gradients (any dtype; fp32 accumulation, fp64 for fp64 input);
returns a 0-d tensor in grad's dtype.

The Triton path computes per-sample sums of squares with the custom op `gandist::sumsq_rows` (fused
reduction, fake implementation for torch.compile); the rest is a handful of scalars in torch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._plane import _acc, _acc_dtype, select_impl


def gradient_penalty_reference(grad: Tensor, center: float = 1.0) -> Tensor:
    flat = grad.reshape(grad.shape[0], -1).to(_acc_dtype(grad))
    return _from_sumsq(flat.square().sum(dim=1), center).to(grad.dtype)


def _from_sumsq(ss: Tensor, center: float) -> Tensor:
    if center == 0.0:
        return ss.mean()  # no sqrt: differentiable at g = 0
    return (ss.sqrt() - center).square().mean()


def _dense_per_sample(g: Tensor) -> Tensor:
    """g whose N samples are each one contiguous block of M elements (contiguous or channels_last)."""
    m = g[0].numel() if g.shape[0] else 0
    dense = g.is_contiguous() or (g.dim() == 4 and g.is_contiguous(memory_format=torch.channels_last))
    return g if dense and (g.shape[0] <= 1 or g.stride(0) == m) else g.contiguous()


@torch.library.custom_op("gandist::sumsq_rows", mutates_args=())
def sumsq_rows(grad: Tensor) -> Tensor:
    """[N] in fp32 (fp64 for fp64 grad): the sum of squares of each sample of grad."""
    import triton

    from ._gp_triton import sumsq_partial_kernel

    g = _dense_per_sample(grad)
    n = g.shape[0]
    m = g.numel() // max(n, 1)
    block = 1024
    split = max(1, min(64, triton.cdiv(m, 64 * block)))  # >= 64 blocks of work per program
    chunk = triton.cdiv(triton.cdiv(m, split), block) * block
    split = triton.cdiv(m, chunk) if m else 1
    part = torch.zeros(n, split, device=g.device, dtype=_acc_dtype(g))
    if n and m:
        sumsq_partial_kernel[(n, split)](g, part, m, chunk, split, BLOCK=block, ACC=_acc(g))
    return part.sum(dim=1)


@sumsq_rows.register_fake
def _(grad):
    return grad.new_empty(grad.shape[0], dtype=_acc_dtype(grad))


def _sumsq_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _sumsq_backward(ctx, dss):
    (g,) = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: a differentiable expression
        shape = (-1,) + (1,) * (g.dim() - 1)
        return (2.0 * dss.view(shape) * g.to(_acc_dtype(g))).to(g.dtype)
    return torch.ops.gandist.sumsq_rows_backward(g, dss)


@torch.library.custom_op("gandist::sumsq_rows_backward", mutates_args=())
def sumsq_rows_backward(grad: Tensor, dss: Tensor) -> Tensor:
    import triton

    from ._gp_triton import sumsq_backward_kernel

    g = _dense_per_sample(grad)
    out = torch.empty_like(g)
    total = g.numel()
    if total:
        m = total // g.shape[0]
        block = 1024
        dss = dss.to(_acc_dtype(g)).contiguous()
        sumsq_backward_kernel[(triton.cdiv(total, block),)](g, dss, out, m, total, BLOCK=block, ACC=_acc(g))
    return out


@sumsq_rows_backward.register_fake
def _(grad, dss):
    return torch.empty_like(grad)


sumsq_rows.register_autograd(_sumsq_backward, setup_context=_sumsq_setup)


def gradient_penalty(grad: Tensor, center: float = 1.0, impl: str = "auto") -> Tensor:
    if grad.dim() < 1 or grad.shape[0] == 0:
        raise ValueError(f"gradient_penalty expects [N, ...] with N >= 1, got {list(grad.shape)}")
    if select_impl(impl, grad, "gradient_penalty") == "reference":
        return gradient_penalty_reference(grad, center)
    ss = torch.ops.gandist.sumsq_rows(grad)
    return _from_sumsq(ss, center).to(grad.dtype)
