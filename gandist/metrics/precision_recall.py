"""Improved precision and recall (Kynkäänniemi et al. 2019).

Each set's manifold is the union of balls around its samples, radius = distance to the k-th nearest
other sample of the same set. Precision: share of generated samples inside the real manifold.
Recall: share of real samples inside the generated manifold.

The features are the caller's; `gandist eval`'s `pr` gives images VGG-16 fc2 features as the paper
(`vgg.py`). Squared distances against squared radii decide the same memberships as the official code's
distances against radii.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gandist.metrics._util import as_numpy, pairwise_sq_dists


def knn_radii(x: np.ndarray, k: int, batch: int = 2048) -> np.ndarray:
    """Squared distance of each sample to its k-th nearest neighbour in x (itself excluded)."""
    if len(x) <= k:
        raise ValueError(f"precision/recall: need more than k={k} samples per set, got {len(x)}")
    out = np.empty(len(x))
    for i in range(0, len(x), batch):
        d = pairwise_sq_dists(x[i : i + batch], x)
        out[i : i + batch] = np.partition(d, k, axis=1)[:, k]  # index 0 is the sample itself (distance 0)
    return out


def _coverage(queries: np.ndarray, anchors: np.ndarray, radii: np.ndarray, batch: int = 2048) -> float:
    inside = np.zeros(len(queries), dtype=bool)
    for i in range(0, len(queries), batch):
        inside[i : i + batch] = (pairwise_sq_dists(queries[i : i + batch], anchors) <= radii[None, :]).any(
            axis=1
        )
    return float(inside.mean())


def precision_recall(real_feats: Any, fake_feats: Any, k: int = 3) -> dict[str, float]:
    real = as_numpy(real_feats, "real_feats", ndim=2)
    fake = as_numpy(fake_feats, "fake_feats", ndim=2)
    return {
        "precision": _coverage(fake, real, knn_radii(real, k)),
        "recall": _coverage(real, fake, knn_radii(fake, k)),
    }
