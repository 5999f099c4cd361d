"""Kernel Inception Distance (Bińkowski et al. 2018): the unbiased MMD^2 estimate with the cubic
polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets.

Subsets follow torch-fidelity: one `np.random.RandomState(seed)` (seed 2020, its default) draws, for
each subset in turn, `choice(len(feats1), m, replace=False)` then the same for feats2."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from gandist.metrics._util import as_numpy


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    m = len(x)
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * kxy.sum() / (m * m)
    )


def kernel_inception_distance(
    feats1: Any, feats2: Any, subsets: int = 100, subset_size: int = 1000, seed: int = 2020
) -> tuple[float, float]:
    """Returns (mean, std) of the unbiased MMD^2 over `subsets` random subsets (without replacement) of
    `subset_size` samples from each set; the subset size shrinks to the smaller set, with a warning."""
    a, b = as_numpy(feats1, "feats1", ndim=2), as_numpy(feats2, "feats2", ndim=2)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("kernel_inception_distance needs at least 2 samples in each set")
    if m < subset_size:
        warnings.warn(f"KID: subset_size {subset_size} > available samples; using {m}", stacklevel=2)
    rng = np.random.RandomState(seed)
    vals = [mmd2_unbiased(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)])
            for _ in range(subsets)]  # fmt: skip
    return float(np.mean(vals)), float(np.std(vals))
