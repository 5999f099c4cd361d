import pytest
import torch
from gandist.kernels import adain, adain_reference
from kernel_cases import (
    create_graph_matches_kernel_backward,
    forward_case,
    grad_case,
    gradchecks,
    opcheck_case,
)
from kernel_utils import DEVICE, DTYPES, OP_ARGS, SHAPES

NAMES = OP_ARGS["adain"]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_forward(shape, dtype, layout):
    forward_case(adain, adain_reference, NAMES, shape, dtype, layout)


def test_reference_is_instance_norm_with_affine():
    x = torch.randn(3, 4, 6, 5, dtype=torch.float64)
    s, b = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    exp = torch.nn.functional.instance_norm(x, eps=1e-8) * s[:, :, None, None] + b[:, :, None, None]
    torch.testing.assert_close(adain_reference(x, s, b), exp)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradients(shape, layout):
    grad_case(adain, adain_reference, NAMES, shape, layout)


def test_gradients_chunked(small_chunks):
    grad_case(adain, adain_reference, NAMES, (2, 3, 5, 7), "channels_last")
    forward_case(adain, adain_reference, NAMES, (2, 3, 5, 7), torch.float32, "contiguous")


@pytest.mark.parametrize("chunked", [False, True])
def test_gradcheck_and_gradgradcheck(chunked, monkeypatch):
    if chunked:
        from gandist.kernels import _plane_triton

        monkeypatch.setattr(_plane_triton, "MAX_BLOCK_HW", 4)
    gradchecks(adain, NAMES, (2, 2, 3, 3))


def test_create_graph_route_agrees():
    create_graph_matches_kernel_backward(adain, NAMES, (2, 3, 4, 5))


def test_opcheck():
    opcheck_case(NAMES, (2, 3, 4, 5), (0.0, 1.0, 1e-8, False, True))


def test_auto_uses_reference_on_cpu_and_rejects_bad_impl():
    x = torch.randn(1, 2, 3, 3)
    s, b = torch.ones(1, 2), torch.zeros(1, 2)
    if DEVICE == "cpu":
        assert torch.equal(adain(x, s, b), adain_reference(x, s, b))
    with pytest.raises(ValueError, match="impl must be"):
        adain(x, s, b, impl="cuda")
    with pytest.raises(ValueError, match=r"scale must have shape \[1, 2\]"):
        adain(x, torch.ones(2), b)
