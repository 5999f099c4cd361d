"""The per-plane reference (every non-CUDA run's path) is written in PyTorch's native fused ops
(addcmul, leaky_relu, instance_norm); these tests hold it to the elementwise definition, spelled out
here independently in float64, for values, first derivatives and second derivatives (R1 and path-length
penalties differentiate it twice)."""

import math

import pytest
import torch
from gandist.kernels import _plane, styled_epilogue
from kernel_utils import SHAPES, assert_close, epilogue_inputs, layouts

NAMES = ["x", "noise", "strength", "bias", "scale", "style_bias"]
# (act, norm, with noise): adain, noise_bias_act without and with noise, the whole epilogue
FLAGS = [(False, True, False), (True, False, False), (True, False, True), (True, True, True)]


def definition(x, noise, strength, bias, scale, style_bias, slope, gain, eps, act, norm):
    """The module docstring of kernels/_plane.py, one elementwise op at a time."""
    t = x
    if act:
        t = t + bias.view(1, -1, 1, 1)
        if noise is not None:
            t = t + strength.view(1, -1, 1, 1) * noise
        t = torch.where(t >= 0, t, t * slope) * gain
    if norm:
        mean = t.mean(dim=(2, 3), keepdim=True)
        var = (t - mean).square().mean(dim=(2, 3), keepdim=True)
        t = (t - mean) / torch.sqrt(var + eps) * scale[:, :, None, None] + style_bias[:, :, None, None]
    return t


def _args(shape, dtype, act, norm, noise, seed=0):
    a = epilogue_inputs(shape, dtype, seed=seed, noise=noise)
    if not act:
        a.update(noise=None, strength=None, bias=None)
    if not norm:
        a.update(scale=None, style_bias=None)
    return a


def _native(a, slope, gain, eps, act, norm):
    return _plane.plane_reference(a["x"], **{k: a[k] for k in NAMES[1:]}, negative_slope=slope, gain=gain,
                                  eps=eps, act=act, norm=norm)  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("flags", FLAGS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_native_reference_equals_the_definition(shape, flags, dtype, layout):
    act, norm, noise = flags
    slope, gain, eps = 0.2, math.sqrt(2), 1e-5
    a = _args(shape, dtype, act, norm, noise)
    a["x"] = layouts(a["x"], layout)
    got = _native(a, slope, gain, eps, act, norm)
    exp = definition(
        *[a[k].double() if a[k] is not None else None for k in NAMES], slope, gain, eps, act, norm
    )
    assert got.dtype == dtype and got.shape == a["x"].shape
    assert_close(got, exp.to(dtype), dtype, "native reference")


@pytest.mark.parametrize("flags", FLAGS)
def test_native_reference_gradients_equal_the_definition(flags):
    act, norm, noise = flags
    a = _args((3, 4, 5, 6), torch.float64, act, norm, noise, seed=7)
    leaves = {k: v.requires_grad_(True) for k, v in a.items() if v is not None}
    dy = torch.randn(a["x"].shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    got = torch.autograd.grad(_native(a, 0.2, 1.0, 1e-8, act, norm), list(leaves.values()), dy)
    exp = torch.autograd.grad(
        definition(*[a[k] for k in NAMES], 0.2, 1.0, 1e-8, act, norm), list(leaves.values()), dy
    )
    for name, g, e in zip(leaves, got, exp):
        assert_close(g, e, torch.float64, f"d{name}")


# gradgradcheck through native instance norm takes ~20 s per case on 2 loaded cores: slow; the fast suite holds
# second order through test_second_derivative_equals_the_definition
@pytest.mark.parametrize("flags", [pytest.param(f, marks=pytest.mark.slow) if f[1] else f for f in FLAGS])
def test_native_reference_gradcheck_and_gradgradcheck(flags):
    act, norm, noise = flags
    a = _args((2, 2, 2, 3), torch.float64, act, norm, noise, seed=9)
    args = tuple(a[k].requires_grad_(True) if a[k] is not None else None for k in NAMES)

    def f(*xs):
        return _plane.run(xs[0], **dict(zip(NAMES[1:], xs[1:])), negative_slope=0.2, gain=math.sqrt(2),
                          eps=1e-8, act=act, norm=norm, impl="reference", op="test")  # fmt: skip

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradgradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_second_derivative_equals_the_definition():
    """d/dparams of ||d y / d x||^2 (what R1 and path length differentiate) in float64, native vs definition."""
    a = epilogue_inputs((2, 3, 4, 4), torch.float64, seed=11)
    leaves = [a[k].requires_grad_(True) for k in NAMES]

    def penalty(fn):
        y = fn(*leaves)
        (dx,) = torch.autograd.grad((y * torch.cos(y)).sum(), leaves[0], create_graph=True)
        return torch.autograd.grad(dx.square().sum(), leaves)

    got = penalty(lambda *xs: styled_epilogue(*xs, impl="reference"))
    exp = penalty(lambda *xs: definition(*xs, 0.2, math.sqrt(2), 1e-8, True, True))
    for name, g, e in zip(NAMES, got, exp):
        assert_close(g, e, torch.float64, f"second-order d{name}")


def test_run_takes_keywords_only():
    a = epilogue_inputs((1, 2, 3, 3), torch.float32)
    with pytest.raises(TypeError):
        _plane.run(a["x"], a["noise"], a["strength"], a["bias"], a["scale"], a["style_bias"], 0.2, 1.0, 1e-8,
                   True, True, "reference", "styled_epilogue")  # fmt: skip
    with pytest.raises(TypeError, match="act"):  # which stages run is always said, never defaulted
        _plane.run(a["x"], bias=a["bias"], op="noise_bias_act")
