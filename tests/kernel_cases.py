"""The checks every per-plane op gets (forward, first-order grads, gradcheck/gradgradcheck, opcheck),
written once and applied by each op's test file to its own argument list."""

from __future__ import annotations

import torch
from kernel_utils import DEVICE, assert_close, epilogue_inputs, layouts


def forward_case(op, ref, names, shape, dtype, layout, **kw):
    a = epilogue_inputs(shape, dtype)
    a["x"] = layouts(a["x"], layout)
    args = [a[k] for k in names]
    got = op(*args, impl="triton", **kw)
    exp = ref(*[t.double() if t is not None else None for t in args], **kw).to(dtype)
    assert got.dtype == dtype and got.shape == a["x"].shape
    assert got.stride() == a["x"].stride(), "output keeps the input's memory format"
    assert_close(got, exp, dtype, "forward")


def grad_case(op, ref, names, shape, layout, **kw):
    """First-order gradients of every input from the Triton backward kernel vs float64 autograd of the reference."""
    a = epilogue_inputs(shape, torch.float32, seed=1)
    a["x"] = layouts(a["x"], layout)
    args = [a[k].requires_grad_(True) if a[k] is not None else None for k in names]
    dy = torch.randn(a["x"].shape, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    out = op(*args, impl="triton", **kw)
    got = torch.autograd.grad(out, [t for t in args if t is not None], dy)
    dargs = [t.detach().double().requires_grad_(True) if t is not None else None for t in args]
    exp = torch.autograd.grad(ref(*dargs, **kw), [t for t in dargs if t is not None], dy.double())
    for name, g, e in zip([k for k, t in zip(names, args) if t is not None], got, exp):
        assert g.dtype == torch.float32
        assert_close(g, e.float(), torch.float32, f"d{name}")


def gradchecks(op, names, shape, **kw):
    a = epilogue_inputs(shape, torch.float64, seed=3)
    args = tuple(a[k].requires_grad_(True) if a[k] is not None else None for k in names)

    def f(*xs):
        return op(*xs, impl="triton", **kw)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)
    assert torch.autograd.gradgradcheck(f, args, eps=1e-6, atol=1e-7, rtol=1e-5)


def create_graph_matches_kernel_backward(op, names, shape, **kw):
    """The first derivative is the same whether it comes from the kernel (no graph) or the
    differentiable route (create_graph=True)."""
    a = epilogue_inputs(shape, torch.float32, seed=4)
    args = [a[k].requires_grad_(True) if a[k] is not None else None for k in names]
    leaves = [t for t in args if t is not None]
    out = op(*args, impl="triton", **kw)
    dy = torch.randn_like(out)
    plain = torch.autograd.grad(out, leaves, dy, retain_graph=True)
    graph = torch.autograd.grad(out, leaves, dy, create_graph=True)
    assert graph[0].requires_grad, "dx from create_graph=True must be differentiable"
    for p, g in zip(plain, graph):
        assert_close(p, g.detach(), torch.float32, "create_graph route")


def opcheck_case(names, shape, flags):
    a = epilogue_inputs(shape, torch.float32, seed=5)
    full = {k: a.get(k) for k in ("x", "noise", "strength", "bias", "scale", "style_bias")}
    args = [full[k].requires_grad_(True) if (k in names and full[k] is not None) else None for k in full]
    torch.library.opcheck(torch.ops.gandist.plane_epilogue.default, (*args, *flags))
