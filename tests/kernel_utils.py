"""Shared helpers of the kernel tests: the one tolerance table, devices, inputs."""

from __future__ import annotations

import torch

# One central per-dtype tolerance table. got is compared with a float64 reference rounded to the same
# dtype: |got - ref| <= atol * max|ref| + rtol * |ref|. bf16/fp16: about one to two units in the last place.
TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.bfloat16: dict(rtol=1.6e-2, atol=8e-3),
    torch.float16: dict(rtol=2e-3, atol=1e-3),
}
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def assert_close(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str = "") -> None:
    tol = TOL[dtype]
    scale = ref.double().abs().max().item() if ref.numel() else 0.0
    torch.testing.assert_close(
        got.double(),
        ref.double(),
        rtol=tol["rtol"],
        atol=tol["atol"] * max(scale, 1e-30),
        msg=lambda m: f"{what}: {m}",
    )


def tolerance_ratio(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> tuple[float, float]:
    """assert_close's criterion as numbers: (worst |got - ref| / max|ref|, worst |got - ref| / what the
    tolerance table allows at that element). The second is <= 1 exactly where assert_close passes
    (NaN/Inf in got count as infinitely far)."""
    tol = TOL[dtype]
    g, r = got.double(), ref.double()
    scale = r.abs().max().item() if r.numel() else 0.0
    err = (g - r).abs().nan_to_num(nan=float("inf"))
    allowed = tol["atol"] * max(scale, 1e-30) + tol["rtol"] * r.abs()
    worst = err.max().item() if err.numel() else 0.0
    return worst / max(scale, 1e-30), (err / allowed).max().item() if err.numel() else 0.0


def layouts(x: torch.Tensor, layout: str) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x.contiguous()


# Odd shapes: 1x1 planes, non-powers of two, a single channel, a plane above the default chunk size.
SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (3, 5, 1, 13), (1, 2, 47, 50)]


# The tensors each per-plane op takes, in order, named as epilogue_inputs names them.
OP_ARGS = {
    "adain": ["x", "scale", "style_bias"],
    "noise_bias_act": ["x", "noise", "strength", "bias"],
    "styled_epilogue": ["x", "noise", "strength", "bias", "scale", "style_bias"],
}


def epilogue_inputs(shape, dtype=torch.float32, device=DEVICE, seed=0, noise=True):
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    return {
        "x": r(n, c, h, w) * 2 + 0.5,
        "noise": r(n, 1, h, w) if noise else None,
        "strength": r(c) if noise else None,
        "bias": r(c),
        "scale": r(n, c) + 1.0,
        "style_bias": r(n, c),
    }
