"""Gaussian Parzen-window log-likelihood (the evaluation of Goodfellow et al. 2014, after Breuleux et al.).

    log p(x) = logsumexp_i(-||x - s_i||^2 / (2 sigma^2)) - log n - (d/2) log(2 pi sigma^2)

sigma is chosen on a validation set by maximising its mean log-likelihood over a grid; without an
explicit validation set, half of `test` (a seeded split) is used for the choice and the other half is
scored, so the reported number never sees the data that chose sigma.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp

from gandist.metrics._util import as_numpy, pairwise_sq_dists


def parzen_log_probs(samples: np.ndarray, test: np.ndarray, sigma: float, batch: int = 1024) -> np.ndarray:
    n, d = samples.shape
    out = np.empty(len(test))
    for i in range(0, len(test), batch):
        sq = pairwise_sq_dists(test[i : i + batch], samples)
        out[i : i + batch] = logsumexp(-sq / (2 * sigma**2), axis=1)
    return out - np.log(n) - 0.5 * d * np.log(2 * np.pi * sigma**2)


def parzen_log_likelihood(
    samples: Any, test: Any, sigma: float | None = None, validation: Any = None,
    sigmas: Any = None, seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Returns {'mean': mean log-likelihood (nats), 'se': its standard error, 'sigma': the bandwidth}."""
    s = as_numpy(samples, "samples").reshape(len(samples), -1)
    t = as_numpy(test, "test").reshape(len(test), -1)
    if sigma is None:
        if validation is None:
            perm = np.random.default_rng(seed).permutation(len(t))
            validation, t = t[perm[: len(t) // 2]], t[perm[len(t) // 2 :]]
        v = as_numpy(validation, "validation").reshape(len(validation), -1)
        grid = np.asarray(sigmas if sigmas is not None else np.logspace(-2, 1, 31))
        scores = [parzen_log_probs(s, v, float(g)).mean() for g in grid]
        sigma = float(grid[int(np.argmax(scores))])
    lp = parzen_log_probs(s, t, sigma)
    return {"mean": float(lp.mean()), "se": float(lp.std(ddof=1) / np.sqrt(len(lp))) if len(lp) > 1 else 0.0,
            "sigma": float(sigma)}  # fmt: skip
