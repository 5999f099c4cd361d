"""Triton kernels for the gradient penalty: per-sample sums of squares and their derivative.

A sample's gradient is M contiguous elements (contiguous or channels_last memory: the norm does not
care about the order). The forward splits each sample over SPLIT programs writing fp32 partial sums,
so a batch of 4 samples of 3x1024x1024 still fills the GPU; the caller adds the partials.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def sumsq_partial_kernel(g_ptr, part_ptr, M, CHUNK, SPLIT, BLOCK: tl.constexpr, ACC: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1)
    acc = tl.zeros([BLOCK], ACC)
    lo = s * CHUNK
    for start in range(0, CHUNK, BLOCK):
        offs = lo + start + tl.arange(0, BLOCK)
        mask = (offs < M) & (start + tl.arange(0, BLOCK) < CHUNK)
        g = tl.load(g_ptr + n * M + offs, mask=mask, other=0.0).to(ACC)
        acc += g * g
    tl.store(part_ptr + n * SPLIT + s, tl.sum(acc, axis=0))


@triton.jit
def sumsq_backward_kernel(g_ptr, dss_ptr, dg_ptr, M, TOTAL, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """dg = 2 * dss[n] * g (the derivative of sum_i g_i^2)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < TOTAL
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC)
    d = tl.load(dss_ptr + offs // M, mask=mask, other=0.0)
    tl.store(dg_ptr + offs, (2.0 * d * g).to(dg_ptr.dtype.element_ty), mask=mask)
