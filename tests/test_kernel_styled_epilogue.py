import math

import pytest
import torch
from gandist.kernels import (
    adain_reference,
    noise_bias_act_reference,
    styled_epilogue,
    styled_epilogue_reference,
)
from kernel_cases import (
    create_graph_matches_kernel_backward,
    forward_case,
    grad_case,
    gradchecks,
    opcheck_case,
)
from kernel_utils import DTYPES, OP_ARGS, SHAPES, epilogue_inputs

NAMES = OP_ARGS["styled_epilogue"]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_forward(shape, dtype, layout):
    forward_case(styled_epilogue, styled_epilogue_reference, NAMES, shape, dtype, layout)


def test_reference_is_the_composition():
    a = epilogue_inputs((2, 3, 4, 5), torch.float64)
    t = noise_bias_act_reference(a["x"], a["noise"], a["strength"], a["bias"])
    exp = adain_reference(t, a["scale"], a["style_bias"])
    torch.testing.assert_close(styled_epilogue_reference(*[a[k] for k in NAMES]), exp)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradients(shape, layout):
    grad_case(styled_epilogue, styled_epilogue_reference, NAMES, shape, layout)


def test_gradients_chunked(small_chunks):
    grad_case(styled_epilogue, styled_epilogue_reference, NAMES, (2, 3, 5, 7), "channels_last")


@pytest.mark.parametrize("chunked", [False, True])
def test_gradcheck_and_gradgradcheck(chunked, monkeypatch):
    if chunked:
        from gandist.kernels import _plane_triton

        monkeypatch.setattr(_plane_triton, "MAX_BLOCK_HW", 4)
    gradchecks(styled_epilogue, NAMES, (2, 2, 3, 3))


def test_create_graph_route_agrees():
    create_graph_matches_kernel_backward(styled_epilogue, NAMES, (2, 3, 4, 5))


def test_opcheck():
    opcheck_case(NAMES, (2, 3, 4, 5), (0.2, math.sqrt(2), 1e-8, True, True))
