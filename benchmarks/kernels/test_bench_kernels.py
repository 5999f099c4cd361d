"""pytest-benchmark view of the kernels: fused vs eager reference (vs torch.compile on GPU), fwd+bwd.

    pytest benchmarks/kernels --benchmark-enable --benchmark-group-by=param:op,param:res
On CPU the shapes shrink and Triton runs interpreted (TRITON_INTERPRET=1): a harness check only.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from bench_kernels import SMOKE_LAYERS, STYLEGAN_LAYERS, make_case, pass_fn  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
RES = [16, 64, 256, 1024] if CUDA else [4]
LAYERS = STYLEGAN_LAYERS if CUDA else SMOKE_LAYERS
PROVIDERS = ["triton", "eager"] + (["compile"] if CUDA else [])


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("res", RES)
@pytest.mark.parametrize("op", ["adain", "noise_bias_act", "styled_epilogue", "gradient_penalty"])
def test_fwd_bwd(benchmark, op, res, provider):
    n, c = LAYERS[res]
    dtype = torch.bfloat16 if CUDA else torch.float32
    args, fused, ref = make_case(op, n, c, res, dtype, DEVICE)
    f = {"triton": lambda *a, **k: fused(*a, impl="triton", **k), "eager": ref}.get(
        provider
    ) or torch.compile(ref)
    run = pass_fn(op, f, args, "fwd+bwd", DEVICE)

    def timed():
        run()
        if CUDA:
            torch.cuda.synchronize()

    benchmark.extra_info.update({"N": n, "C": c, "H": res, "dtype": str(dtype)})
    benchmark(timed)
