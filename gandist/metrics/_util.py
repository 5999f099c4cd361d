"""Input normalisation shared by the metrics: numpy arrays or torch tensors in, float64 numpy out."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_numpy(x: Any, name: str = "input", ndim: int | None = None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {list(a.shape)}")
    return a


def pairwise_sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """||a_i - b_j||^2 [len(a), len(b)], clipped at 0 (the expansion can round slightly negative)."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)
