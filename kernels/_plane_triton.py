"""Triton kernels for the per-plane epilogue family (imported lazily: only when impl='triton' runs).

A "plane" is one (n, c) slice of an [N, C, H, W] activation: R = N*C rows of HW elements. Each program
owns BLOCK_R rows and walks their HW elements in BLOCK_HW chunks, so tiny planes (4x4, many rows) and
huge ones (1024x1024, few rows) both fill a program. Strides are passed explicitly: contiguous and
channels_last tensors take the same code path (an (h, w) pair is one index hw with stride s_hw,
valid whenever stride_h == W * stride_w, which holds for both layouts).

Stages, selected at compile time:
  HAS_ACT   t = leaky_relu(x + strength[c] * noise[n, hw] + bias[c], slope) * gain   (noise optional)
  HAS_NORM  y = (t - mean_hw(t)) / sqrt(var_hw(t) + eps) * scale[n, c] + style_bias[n, c]
All arithmetic is in ACC: fp32 for fp32/bf16/fp16 storage, fp64 for fp64 (gradcheck). When a plane fits one chunk (SINGLE) it is read
once and kept in registers; otherwise statistics are merged chunk by chunk (Chan et al.'s parallel
variance update), which is exact in fp32 where sum-of-squares formulas cancel catastrophically.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _stage_act(
    x_ptr,
    noise_ptr,
    strength_ptr,
    bias_ptr,
    n,
    c,
    hw,
    mask,
    rmask,
    sxn,
    sxc,
    sxhw,
    snn,
    snhw,
    slope,
    gain,
    HAS_ACT: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    ACC: tl.constexpr,
):
    """Load x for a [BLOCK_R, BLOCK_HW] tile; return (t, pre-activation v, noise) in fp32."""
    x = tl.load(x_ptr + n * sxn + c * sxc + hw * sxhw, mask=mask, other=0.0).to(ACC)
    nz = tl.zeros_like(x)
    if HAS_ACT:
        v = x + tl.load(bias_ptr + c, mask=rmask, other=0.0).to(ACC)
        if HAS_NOISE:
            nz = tl.load(noise_ptr + n * snn + hw * snhw, mask=mask, other=0.0).to(ACC)
            v = v + tl.load(strength_ptr + c, mask=rmask, other=0.0).to(ACC) * nz
        t = tl.where(v >= 0, v, v * slope) * gain
    else:
        v = x
        t = x
    return t, v, nz


@triton.jit
def _plane_stats(
    x_ptr,
    noise_ptr,
    strength_ptr,
    bias_ptr,
    n,
    c,
    rmask,
    cols,
    HW,
    sxn,
    sxc,
    sxhw,
    snn,
    snhw,
    slope,
    gain,
    HAS_ACT: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    ACC: tl.constexpr,
):
    """Mean and biased variance of t over each row's HW elements, merged chunk by chunk."""
    mean = tl.zeros([BLOCK_R, 1], ACC)
    m2 = tl.zeros([BLOCK_R, 1], ACC)
    for start in range(0, HW, BLOCK_HW):
        hw = start + cols
        mask = rmask & (hw < HW)
        t, v, nz = _stage_act(
            x_ptr,
            noise_ptr,
            strength_ptr,
            bias_ptr,
            n,
            c,
            hw,
            mask,
            rmask,
            sxn,
            sxc,
            sxhw,
            snn,
            snhw,
            slope,
            gain,
            HAS_ACT,
            HAS_NOISE,
            ACC,
        )
        t = tl.where(mask, t, 0.0)
        cnt = start * 1.0  # elements merged so far (every earlier chunk was full)
        cnt_b = tl.minimum(HW - start, BLOCK_HW) * 1.0
        mean_b = tl.sum(t, axis=1)[:, None] / cnt_b
        d = tl.where(mask, t - mean_b, 0.0)
        m2_b = tl.sum(d * d, axis=1)[:, None]
        delta = mean_b - mean
        tot = cnt + cnt_b
        mean = mean + delta * (cnt_b / tot)
        m2 = m2 + m2_b + delta * delta * (cnt * cnt_b / tot)
    return mean, m2 / HW


@triton.jit
def plane_fwd_kernel(
    x_ptr,
    noise_ptr,
    strength_ptr,
    bias_ptr,
    scale_ptr,
    sbias_ptr,
    y_ptr,
    R,
    C,
    HW,
    sxn,
    sxc,
    sxhw,
    snn,
    snhw,
    syn,
    syc,
    syhw,
    slope,
    gain,
    eps,
    HAS_ACT: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    HAS_NORM: tl.constexpr,
    SINGLE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    ACC: tl.constexpr,
):
    rows = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R))[:, None].to(tl.int64)
    rmask = rows < R
    n = rows // C
    c = rows % C
    cols = tl.arange(0, BLOCK_HW)[None, :]
    if HAS_NORM:
        scale = tl.load(scale_ptr + rows, mask=rmask, other=0.0).to(ACC)
        sbias = tl.load(sbias_ptr + rows, mask=rmask, other=0.0).to(ACC)
    if SINGLE:
        mask = rmask & (cols < HW)
        t, v, nz = _stage_act(
            x_ptr,
            noise_ptr,
            strength_ptr,
            bias_ptr,
            n,
            c,
            cols,
            mask,
            rmask,
            sxn,
            sxc,
            sxhw,
            snn,
            snhw,
            slope,
            gain,
            HAS_ACT,
            HAS_NOISE,
            ACC,
        )
        if HAS_NORM:
            mean = tl.sum(tl.where(mask, t, 0.0), axis=1)[:, None] / HW
            d = tl.where(mask, t - mean, 0.0)
            rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1)[:, None] / HW + eps)
            t = d * (rstd * scale) + sbias
        tl.store(y_ptr + n * syn + c * syc + cols * syhw, t.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        if HAS_NORM:
            mean, var = _plane_stats(
                x_ptr,
                noise_ptr,
                strength_ptr,
                bias_ptr,
                n,
                c,
                rmask,
                cols,
                HW,
                sxn,
                sxc,
                sxhw,
                snn,
                snhw,
                slope,
                gain,
                HAS_ACT,
                HAS_NOISE,
                BLOCK_R,
                BLOCK_HW,
                ACC,
            )
            mul = scale / tl.sqrt(var + eps)
        for start in range(0, HW, BLOCK_HW):
            hw = start + cols
            mask = rmask & (hw < HW)
            t, v, nz = _stage_act(
                x_ptr,
                noise_ptr,
                strength_ptr,
                bias_ptr,
                n,
                c,
                hw,
                mask,
                rmask,
                sxn,
                sxc,
                sxhw,
                snn,
                snhw,
                slope,
                gain,
                HAS_ACT,
                HAS_NOISE,
                ACC,
            )
            if HAS_NORM:
                t = (t - mean) * mul + sbias
            tl.store(y_ptr + n * syn + c * syc + hw * syhw, t.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_chunk(
    x_ptr,
    noise_ptr,
    strength_ptr,
    bias_ptr,
    dy_ptr,
    dx_ptr,
    n,
    c,
    hw,
    mask,
    rmask,
    sxn,
    sxc,
    sxhw,
    snn,
    snhw,
    sdn,
    sdc,
    sdhw,
    sgn,
    sgc,
    sghw,
    slope,
    gain,
    mean,
    rstd,
    scale,
    k_dy,
    k_dyx,
    acc_b,
    acc_s,
    HAS_ACT: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    HAS_NORM: tl.constexpr,
    ACC: tl.constexpr,
):
    """dx for one tile, and the running per-row sums of dv and dv * noise (bias / strength grads)."""
    t, v, nz = _stage_act(
        x_ptr,
        noise_ptr,
        strength_ptr,
        bias_ptr,
        n,
        c,
        hw,
        mask,
        rmask,
        sxn,
        sxc,
        sxhw,
        snn,
        snhw,
        slope,
        gain,
        HAS_ACT,
        HAS_NOISE,
        ACC,
    )
    dy = tl.load(dy_ptr + n * sdn + c * sdc + hw * sdhw, mask=mask, other=0.0).to(ACC)
    if HAS_NORM:
        that = (t - mean) * rstd
        # d/dt of the AdaIN stage: rstd * scale * (dy - mean(dy) - that * mean(dy * that))
        dt = (rstd * scale) * (dy - k_dy - that * k_dyx)
    else:
        dt = dy
    if HAS_ACT:
        dg = dt * gain
        dv = tl.where(v >= 0, dg, dg * slope)  # slope multiplies in the data's dtype, as the forward
        dv = tl.where(mask, dv, 0.0)
        acc_b += tl.sum(dv, axis=1)[:, None]
        acc_s += tl.sum(dv * nz, axis=1)[:, None]
    else:
        dv = dt
    tl.store(dx_ptr + n * sgn + c * sgc + hw * sghw, dv.to(dx_ptr.dtype.element_ty), mask=mask)
    return acc_b, acc_s


@triton.jit
def plane_bwd_kernel(
    x_ptr,
    noise_ptr,
    strength_ptr,
    bias_ptr,
    scale_ptr,
    dy_ptr,
    dx_ptr,
    dscale_ptr,
    dsbias_ptr,
    dbias_ptr,
    dstrength_ptr,
    R,
    C,
    HW,
    sxn,
    sxc,
    sxhw,
    snn,
    snhw,
    sdn,
    sdc,
    sdhw,
    sgn,
    sgc,
    sghw,
    slope,
    gain,
    eps,
    HAS_ACT: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    HAS_NORM: tl.constexpr,
    SINGLE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    ACC: tl.constexpr,
):
    """Writes dx and per-row (= per (n, c)) partial gradients: dscale, dstyle_bias (AdaIN stage), and
    the (n, c) contributions to dbias[c] and dstrength[c] (reduced over n by the caller)."""
    rows = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R))[:, None].to(tl.int64)
    rmask = rows < R
    n = rows // C
    c = rows % C
    cols = tl.arange(0, BLOCK_HW)[None, :]
    mean = tl.zeros([BLOCK_R, 1], ACC)
    rstd = tl.zeros([BLOCK_R, 1], ACC)
    scale = tl.zeros([BLOCK_R, 1], ACC)
    k_dy = tl.zeros([BLOCK_R, 1], ACC)
    k_dyx = tl.zeros([BLOCK_R, 1], ACC)
    acc_b = tl.zeros([BLOCK_R, 1], ACC)
    acc_s = tl.zeros([BLOCK_R, 1], ACC)
    if HAS_NORM:
        scale = tl.load(scale_ptr + rows, mask=rmask, other=0.0).to(ACC)
        if SINGLE:
            mask = rmask & (cols < HW)
            t, v, nz = _stage_act(
                x_ptr,
                noise_ptr,
                strength_ptr,
                bias_ptr,
                n,
                c,
                cols,
                mask,
                rmask,
                sxn,
                sxc,
                sxhw,
                snn,
                snhw,
                slope,
                gain,
                HAS_ACT,
                HAS_NOISE,
                ACC,
            )
            mean = tl.sum(tl.where(mask, t, 0.0), axis=1)[:, None] / HW
            d = tl.where(mask, t - mean, 0.0)
            rstd = 1.0 / tl.sqrt(tl.sum(d * d, axis=1)[:, None] / HW + eps)
            dy = tl.load(dy_ptr + n * sdn + c * sdc + cols * sdhw, mask=mask, other=0.0).to(ACC)
            s_dy = tl.sum(dy, axis=1)[:, None]
            s_dyx = tl.sum(dy * d * rstd, axis=1)[:, None]
        else:
            mean, var = _plane_stats(
                x_ptr,
                noise_ptr,
                strength_ptr,
                bias_ptr,
                n,
                c,
                rmask,
                cols,
                HW,
                sxn,
                sxc,
                sxhw,
                snn,
                snhw,
                slope,
                gain,
                HAS_ACT,
                HAS_NOISE,
                BLOCK_R,
                BLOCK_HW,
                ACC,
            )
            rstd = 1.0 / tl.sqrt(var + eps)
            s_dy = tl.zeros([BLOCK_R, 1], ACC)
            s_dyx = tl.zeros([BLOCK_R, 1], ACC)
            for start in range(0, HW, BLOCK_HW):
                hw = start + cols
                mask = rmask & (hw < HW)
                t, v, nz = _stage_act(
                    x_ptr,
                    noise_ptr,
                    strength_ptr,
                    bias_ptr,
                    n,
                    c,
                    hw,
                    mask,
                    rmask,
                    sxn,
                    sxc,
                    sxhw,
                    snn,
                    snhw,
                    slope,
                    gain,
                    HAS_ACT,
                    HAS_NOISE,
                    ACC,
                )
                dy = tl.load(dy_ptr + n * sdn + c * sdc + hw * sdhw, mask=mask, other=0.0).to(ACC)
                s_dy += tl.sum(dy, axis=1)[:, None]
                s_dyx += tl.sum(tl.where(mask, dy * (t - mean) * rstd, 0.0), axis=1)[:, None]
        tl.store(dscale_ptr + rows, s_dyx, mask=rmask)
        tl.store(dsbias_ptr + rows, s_dy, mask=rmask)
        k_dy = s_dy / HW
        k_dyx = s_dyx / HW
    for start in range(0, HW, BLOCK_HW):
        hw = start + cols
        mask = rmask & (hw < HW)
        acc_b, acc_s = _bwd_chunk(
            x_ptr,
            noise_ptr,
            strength_ptr,
            bias_ptr,
            dy_ptr,
            dx_ptr,
            n,
            c,
            hw,
            mask,
            rmask,
            sxn,
            sxc,
            sxhw,
            snn,
            snhw,
            sdn,
            sdc,
            sdhw,
            sgn,
            sgc,
            sghw,
            slope,
            gain,
            mean,
            rstd,
            scale,
            k_dy,
            k_dyx,
            acc_b,
            acc_s,
            HAS_ACT,
            HAS_NOISE,
            HAS_NORM,
            ACC,
        )
    if HAS_ACT:
        tl.store(dbias_ptr + rows, acc_b, mask=rmask)
        tl.store(dstrength_ptr + rows, acc_s, mask=rmask)


MAX_BLOCK_HW = 2048  # planes larger than this take the chunked (multi-pass) path; tests lower it


def launch_config(rows: int, hw: int) -> tuple[int, int, bool, int]:
    """(BLOCK_R, BLOCK_HW, SINGLE, num_warps): about 4096 fp32 elements per tile."""
    block_hw = min(triton.next_power_of_2(hw), MAX_BLOCK_HW)
    block_r = max(1, min(triton.next_power_of_2(rows), 4096 // block_hw))
    return block_r, block_hw, hw <= block_hw, 8 if block_r * block_hw >= 4096 else 4
