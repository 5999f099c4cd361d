import pytest
import torch
from gandist.kernels import gradient_penalty, gradient_penalty_reference
from kernel_utils import DEVICE, DTYPES, TOL, assert_close


def _grad(shape, dtype, seed=0, layout="contiguous"):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 0.7
    g = g.to(DEVICE, dtype)
    return g.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else g


@pytest.mark.parametrize("shape", [(1, 1), (5, 3, 7, 9), (3, 2, 33, 31), (2, 70000)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("center", [0.0, 1.0])
def test_forward_against_float64_definition(shape, dtype, center):
    g = _grad(shape, dtype)
    norms = g.double().reshape(shape[0], -1).norm(dim=1)
    exp = ((norms - center) ** 2).mean()
    got = gradient_penalty(g, center, impl="triton")
    assert got.dtype == dtype
    assert_close(got, exp.to(dtype), dtype)


@pytest.mark.parametrize("layout", ["channels_last", "strided"])
def test_layouts(layout):
    g = _grad(
        (3, 4, 5, 6), torch.float32, layout="channels_last" if layout == "channels_last" else "contiguous"
    )
    if layout == "strided":
        g = g[:, :, ::2]  # a non-dense view
    torch.testing.assert_close(
        gradient_penalty(g, 1.0, impl="triton"), gradient_penalty_reference(g, 1.0), **TOL[torch.float32]
    )


@pytest.mark.parametrize("center", [0.0, 1.0])
def test_backward_against_float64(center):
    g = _grad((4, 3, 5, 7), torch.float32, seed=1).requires_grad_(True)
    (got,) = torch.autograd.grad(gradient_penalty(g, center, impl="triton"), g)
    gd = g.detach().double().requires_grad_(True)
    (exp,) = torch.autograd.grad(gradient_penalty_reference(gd, center), gd)
    assert_close(got, exp.float(), torch.float32)


@pytest.mark.parametrize("center", [0.0, 1.0])
def test_gradcheck_and_gradgradcheck(center):
    g = _grad((3, 2, 3, 2), torch.float64, seed=2).requires_grad_(True)
    f = lambda t: gradient_penalty(t, center, impl="triton")
    assert torch.autograd.gradcheck(f, (g,), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradgradcheck(f, (g,), eps=1e-6, atol=1e-7)


def test_opcheck():
    g = _grad((3, 4, 5), torch.float32).requires_grad_(True)
    torch.library.opcheck(torch.ops.gandist.sumsq_rows.default, (g,))


def test_wgan_gp_through_a_network_matches_reference():
    """The whole WGAN-GP step: penalty via the kernel, then backward through D's double-backward graph."""
    torch.manual_seed(0)
    D = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)
    ).double()
    x = torch.randn(5, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    grads = {}
    for impl in ("triton", "reference"):
        (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        D.zero_grad()
        gradient_penalty(g, 1.0, impl=impl).backward()
        grads[impl] = [None if p.grad is None else p.grad.clone() for p in D.parameters()]
    assert (
        grads["triton"][-1] is None and grads["reference"][-1] is None
    )  # the last bias does not enter dD/dx
    for a, b in zip(grads["triton"][:-1], grads["reference"][:-1]):
        torch.testing.assert_close(a, b, **TOL[torch.float64])
