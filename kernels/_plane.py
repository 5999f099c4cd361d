"""The per-plane epilogue op shared by adain, noise_bias_act and styled_epilogue.

    t = leaky_relu(x + strength[c] * noise[n, 0, h, w] + bias[c], slope) * gain      (stage ACT)
    y = (t - mean_hw t) / sqrt(var_hw t + eps) * scale[n, c] + style_bias[n, c]     (stage NORM)

`plane_reference` is the pure-torch definition (fp32 arithmetic, fp64 for fp64 input; output in x's dtype). The Triton
path is the custom op `gandist::plane_epilogue` with a fake (shape) implementation, and its first
derivative is the custom op `gandist::plane_epilogue_backward`. When the backward itself runs with
grad mode on (`create_graph=True`: R1, WGAN-GP and path-length penalties), the derivative is taken of
the reference instead, which autograd can differentiate again: second order is exact by construction.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

_WARNED: set[str] = set()


def warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, stacklevel=3)


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def select_impl(impl: str, x: Tensor, op: str) -> str:
    """'auto' -> Triton for CUDA tensors (reference elsewhere); 'triton' on CPU runs the kernels in the
    Triton interpreter, which needs TRITON_INTERPRET=1 set before triton is first imported."""
    if impl not in ("auto", "triton", "reference"):
        raise ValueError(f"{op}: impl must be 'auto', 'triton' or 'reference', got '{impl}'")
    if impl == "reference":
        return impl
    if impl == "auto":
        if not x.is_cuda:
            return "reference"
        if not triton_available():
            warn_once(op, f"{op}: triton is not installed; using the pure-torch reference (slower)")
            return "reference"
        return "triton"
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            f"{op}: impl='triton' on {x.device.type} tensors runs the Triton interpreter; set TRITON_INTERPRET=1 "
            "before triton is imported, or use impl='auto'/'reference'"
        )
    if not triton_available():
        raise RuntimeError(f"{op}: impl='triton' needs the triton package (pip install triton)")
    return "triton"


# ---------------------------------------------------------------------------------------------------
# Reference


def plane_reference(
    x: Tensor,
    *,
    noise: Tensor | None = None,
    strength: Tensor | None = None,
    bias: Tensor | None = None,
    scale: Tensor | None = None,
    style_bias: Tensor | None = None,
    negative_slope: float = 0.2,
    gain: float = 1.0,
    eps: float = 1e-8,
    act: bool,
    norm: bool,
) -> Tensor:
    """The op in PyTorch's native fused ops: the path of every non-CUDA run and the first derivative of
    the Triton op under create_graph. Values equal the elementwise definition in the module docstring up to
    float rounding (float64 tests: tests/test_kernel_plane_native.py). Each native op has its own backward
    (leaky_relu_backward; instance norm is native_batch_norm over [1, N*C, H, W] with its fused backward and
    double backward), so autograd records 5 compute nodes per layer where the elementwise form recorded 15
    (views aside). StyleGAN 32 px, width 64, batch 16, R1 every step, one training step on the CPU
    (torch.profiler, with issue 31's R1 reuse and deterministic-mode changes): aten::mul 486 -> 348 calls,
    aten::sum 169 -> 106."""
    acc = _acc_dtype(x)
    t = x.to(acc)
    if act:
        t = t + bias.to(acc).view(1, -1, 1, 1)
        if noise is not None:
            t = torch.addcmul(t, strength.to(acc).view(1, -1, 1, 1), noise.to(acc))  # t + strength * noise
        t = torch.nn.functional.leaky_relu(t, negative_slope)
        if gain != 1.0:  # StyleGAN passes 1 (the convolution weights carry He's constant): skip the pass
            t = t * gain
    if norm:
        t = _instance_norm(t, eps)
        t = torch.addcmul(style_bias.to(acc)[:, :, None, None], t, scale.to(acc)[:, :, None, None])
    return t.to(x.dtype)


def _instance_norm(t: Tensor, eps: float) -> Tensor:
    """(t - mean_hw t) / sqrt(var_hw t + eps), biased variance: instance norm's definition, as AdaIN's.

    The aten op itself (F.instance_norm refuses one-pixel planes in training). It evaluates t * rstd - mean * rstd,
    whose rounding grows as |mean| / std (as nn.InstanceNorm2d's); a one-pixel plane (std 0, rstd 1/sqrt(eps))
    would come out as rounding noise times 1e4 where the definition gives exactly 0, so it takes the definition
    (StyleGAN's planes are 4x4 and up: never there)."""
    if t.shape[2] * t.shape[3] == 1:
        centred = t - t.mean(dim=(2, 3), keepdim=True)
        return centred * torch.rsqrt(centred.square().mean(dim=(2, 3), keepdim=True) + eps)
    return torch.instance_norm(t, None, None, None, None, True, 0.0, eps, False)


# ---------------------------------------------------------------------------------------------------
# Triton custom ops


def _hw_stride(t: Tensor) -> Tensor:
    """Return t (or a contiguous copy) such that (h, w) flattens to one index with stride t.stride(3)."""
    if t.shape[2] > 1 and t.stride(2) != t.shape[3] * t.stride(3):
        return t.contiguous()
    return t


def _check(x: Tensor, noise, strength, bias, scale, style_bias, has_act: bool, has_norm: bool) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected x of shape [N, C, H, W], got {list(x.shape)}")
    n, c = x.shape[:2]
    if has_act:
        if bias is None or bias.shape != (c,):
            raise ValueError(f"bias must have shape [{c}]")
        if noise is not None:
            if noise.shape != (n, 1, *x.shape[2:]):
                raise ValueError(
                    f"noise must have shape [{n}, 1, {x.shape[2]}, {x.shape[3]}], got {list(noise.shape)}"
                )
            if strength is None or strength.shape != (c,):
                raise ValueError(f"strength must have shape [{c}]")
    if has_norm:
        for name, t in (("scale", scale), ("style_bias", style_bias)):
            if t is None or t.shape != (n, c):
                raise ValueError(f"{name} must have shape [{n}, {c}]")


def _acc(x: Tensor):
    """Accumulation type inside the kernels: fp32, or fp64 for fp64 tensors (gradcheck)."""
    import triton.language as tl

    return tl.float64 if x.dtype == torch.float64 else tl.float32


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _dummy(x: Tensor) -> Tensor:
    return x.new_empty(1)


@torch.library.custom_op("gandist::plane_epilogue", mutates_args=())
def plane_epilogue(
    x: Tensor,
    noise: Tensor | None,
    strength: Tensor | None,
    bias: Tensor | None,
    scale: Tensor | None,
    style_bias: Tensor | None,
    negative_slope: float,
    gain: float,
    eps: float,
    has_act: bool,
    has_norm: bool,
) -> Tensor:
    from ._plane_triton import launch_config, plane_fwd_kernel

    x = _hw_stride(x)
    noise = _hw_stride(noise) if noise is not None else None
    y = torch.empty_like(x)
    n, c, h, w = x.shape
    rows, hw = n * c, h * w
    if rows == 0 or hw == 0:
        return y
    block_r, block_hw, single, warps = launch_config(rows, hw)
    nz = noise if noise is not None else _dummy(x)
    plane_fwd_kernel[(-(-rows // block_r),)](
        x, nz,
        strength if strength is not None else _dummy(x),
        bias if bias is not None else _dummy(x),
        scale.contiguous() if scale is not None else _dummy(x),
        style_bias.contiguous() if style_bias is not None else _dummy(x),
        y, rows, c, hw, x.stride(0), x.stride(1), x.stride(3),
        nz.stride(0), nz.stride(3) if noise is not None else 0,
        y.stride(0), y.stride(1), y.stride(3),
        negative_slope, gain, eps,
        HAS_ACT=has_act, HAS_NOISE=noise is not None, HAS_NORM=has_norm, SINGLE=single,
        BLOCK_R=block_r, BLOCK_HW=block_hw, ACC=_acc(x), num_warps=warps,
    )  # fmt: skip
    return y


@plane_epilogue.register_fake
def _(x, noise, strength, bias, scale, style_bias, negative_slope, gain, eps, has_act, has_norm):
    return torch.empty_like(x)


@torch.library.custom_op("gandist::plane_epilogue_backward", mutates_args=())
def plane_epilogue_backward(
    dy: Tensor,
    x: Tensor,
    noise: Tensor | None,
    strength: Tensor | None,
    bias: Tensor | None,
    scale: Tensor | None,
    negative_slope: float,
    gain: float,
    eps: float,
    has_act: bool,
    has_norm: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Returns dx and [N, C] partials (fp32; fp64 for fp64 x): d scale, d style_bias, and the per-(n, c) terms of
    d bias[c] and d strength[c]."""
    from ._plane_triton import launch_config, plane_bwd_kernel

    x, dy = _hw_stride(x), _hw_stride(dy)
    noise = _hw_stride(noise) if noise is not None else None
    n, c, h, w = x.shape
    rows, hw = n * c, h * w
    dx = torch.empty_like(x)
    parts = [torch.zeros(n, c, device=x.device, dtype=_acc_dtype(x)) for _ in range(4)]
    if rows == 0 or hw == 0:
        return (dx, *parts)
    block_r, block_hw, single, warps = launch_config(rows, hw)
    nz = noise if noise is not None else _dummy(x)
    plane_bwd_kernel[(-(-rows // block_r),)](
        x, nz,
        strength if strength is not None else _dummy(x),
        bias if bias is not None else _dummy(x),
        scale.contiguous() if scale is not None else _dummy(x),
        dy, dx, *parts,
        rows, c, hw, x.stride(0), x.stride(1), x.stride(3),
        nz.stride(0), nz.stride(3) if noise is not None else 0,
        dy.stride(0), dy.stride(1), dy.stride(3), dx.stride(0), dx.stride(1), dx.stride(3),
        negative_slope, gain, eps,
        HAS_ACT=has_act, HAS_NOISE=noise is not None, HAS_NORM=has_norm, SINGLE=single,
        BLOCK_R=block_r, BLOCK_HW=block_hw, ACC=_acc(x), num_warps=warps,
    )  # fmt: skip
    return (dx, *parts)


@plane_epilogue_backward.register_fake
def _(dy, x, noise, strength, bias, scale, negative_slope, gain, eps, has_act, has_norm):
    n, c = x.shape[:2]
    parts = [x.new_empty(n, c, dtype=_acc_dtype(x)) for _ in range(4)]
    return (torch.empty_like(x), *parts)


_TENSOR_ARGS = 6  # x, noise, strength, bias, scale, style_bias


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[:_TENSOR_ARGS])
    ctx.flags = inputs[_TENSOR_ARGS:]


def _backward(ctx, dy):
    x, noise, strength, bias, scale, style_bias = ctx.saved_tensors
    slope, gain, eps, has_act, has_norm = ctx.flags
    need = ctx.needs_input_grad[:_TENSOR_ARGS]
    grads: list[Tensor | None] = [None] * _TENSOR_ARGS
    if torch.is_grad_enabled():
        # create_graph=True: differentiate the reference so the result is itself differentiable.
        inputs = (x, noise, strength, bias, scale, style_bias)
        wrt = [i for i in range(_TENSOR_ARGS) if need[i]]
        with torch.enable_grad():
            y = plane_reference(
                x, noise=noise, strength=strength, bias=bias, scale=scale, style_bias=style_bias,
                negative_slope=slope, gain=gain, eps=eps, act=has_act, norm=has_norm,
            )  # fmt: skip
            got = torch.autograd.grad(y, [inputs[i] for i in wrt], dy, create_graph=True, allow_unused=True)
        for i, g in zip(wrt, got):
            grads[i] = g
        return (*grads, None, None, None, None, None)
    dx, dscale, dsbias, dbias_nc, dstrength_nc = torch.ops.gandist.plane_epilogue_backward(
        dy, x, noise, strength, bias, scale, slope, gain, eps, has_act, has_norm
    )
    grads[0] = dx if need[0] else None
    if has_act and noise is not None and need[1]:
        grads[1] = (
            (dx.to(_acc_dtype(x)) * strength.to(_acc_dtype(x)).view(1, -1, 1, 1))
            .sum(dim=1, keepdim=True)
            .to(noise.dtype)
        )
    if has_act and noise is not None and need[2]:
        grads[2] = dstrength_nc.sum(0).to(strength.dtype)
    if has_act and need[3]:
        grads[3] = dbias_nc.sum(0).to(bias.dtype)
    if has_norm and need[4]:
        grads[4] = dscale.to(scale.dtype)
    if has_norm and need[5]:
        grads[5] = dsbias.to(style_bias.dtype)
    return (*grads, None, None, None, None, None)


plane_epilogue.register_autograd(_backward, setup_context=_setup_context)


def run(
    x: Tensor,
    *,
    noise: Tensor | None = None,
    strength: Tensor | None = None,
    bias: Tensor | None = None,
    scale: Tensor | None = None,
    style_bias: Tensor | None = None,
    negative_slope: float = 0.2,
    gain: float = 1.0,
    eps: float = 1e-8,
    act: bool,
    norm: bool,
    impl: str = "auto",
    op: str,
) -> Tensor:
    """The per-plane op by name of every argument (as stylegan2-ada's `bias_act(x, b, act='lrelu', ...)`):
    act=True runs noise + bias + leaky ReLU + gain, norm=True the instance norm and style affine."""
    _check(x, noise, strength, bias, scale, style_bias, act, norm)
    kw = dict(noise=noise, strength=strength, bias=bias, scale=scale, style_bias=style_bias)
    if select_impl(impl, x, op) == "reference":
        return plane_reference(x, **kw, negative_slope=negative_slope, gain=gain, eps=eps, act=act, norm=norm)
    return torch.ops.gandist.plane_epilogue(
        x, noise, strength, bias, scale, style_bias, float(negative_slope), float(gain), float(eps), act, norm
    )
