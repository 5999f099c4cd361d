"""Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)), per split of consecutive samples."""

from __future__ import annotations

from typing import Any

import numpy as np

from gandist.metrics._util import as_numpy


def inception_score(probs: Any, splits: int = 10) -> tuple[float, float]:
    """probs: [N, K] class probabilities (rows sum to 1). Returns (mean, std) over the splits."""
    p = as_numpy(probs, "probs", ndim=2)
    if splits < 1 or len(p) < splits:
        raise ValueError(f"inception_score: need at least `splits`={splits} samples, got {len(p)}")
    if np.any(p < 0) or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError(
            "inception_score expects probabilities: non-negative rows summing to 1 (apply softmax)"
        )
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))
