import math

import pytest
import torch
from gandist.kernels import noise_bias_act, noise_bias_act_reference
from kernel_cases import (
    create_graph_matches_kernel_backward,
    forward_case,
    grad_case,
    gradchecks,
    opcheck_case,
)
from kernel_utils import DTYPES, OP_ARGS, SHAPES, epilogue_inputs

NAMES = OP_ARGS["noise_bias_act"]


NO_NOISE = ["x", "bias"]


def no_noise(x, bias, **kw):
    return noise_bias_act(x, None, None, bias, **kw)


def no_noise_ref(x, bias, **kw):
    return noise_bias_act_reference(x, None, None, bias, **kw)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_forward(shape, dtype, layout):
    forward_case(noise_bias_act, noise_bias_act_reference, NAMES, shape, dtype, layout)


@pytest.mark.parametrize("slope, gain", [(0.2, math.sqrt(2)), (0.0, 1.0), (0.01, 3.0)])
def test_forward_slope_gain_and_no_noise(slope, gain):
    kw = dict(negative_slope=slope, gain=gain)
    forward_case(
        noise_bias_act, noise_bias_act_reference, NAMES, (2, 3, 5, 7), torch.float32, "contiguous", **kw
    )
    forward_case(no_noise, no_noise_ref, NO_NOISE, (2, 3, 5, 7), torch.float32, "contiguous", **kw)


def test_reference_matches_definition():
    a = epilogue_inputs((2, 3, 4, 5), torch.float64)
    x, nz, st, b = a["x"], a["noise"], a["strength"], a["bias"]
    v = x + st.view(1, -1, 1, 1) * nz + b.view(1, -1, 1, 1)
    exp = torch.where(v >= 0, v, 0.2 * v) * math.sqrt(2)
    torch.testing.assert_close(noise_bias_act_reference(x, nz, st, b), exp)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradients(shape, layout):
    grad_case(noise_bias_act, noise_bias_act_reference, NAMES, shape, layout)


def test_gradients_without_noise_and_chunked(small_chunks):
    grad_case(no_noise, no_noise_ref, NO_NOISE, (2, 3, 5, 7), "contiguous")
    grad_case(noise_bias_act, noise_bias_act_reference, NAMES, (2, 3, 5, 7), "channels_last")


def test_gradcheck_and_gradgradcheck():
    gradchecks(noise_bias_act, NAMES, (2, 3, 3, 2))
    gradchecks(no_noise, NO_NOISE, (2, 3, 3, 2))


def test_create_graph_route_agrees():
    create_graph_matches_kernel_backward(noise_bias_act, NAMES, (2, 3, 4, 5))


def test_opcheck():
    opcheck_case(NAMES, (2, 3, 4, 5), (0.2, math.sqrt(2), 0.0, True, False))
