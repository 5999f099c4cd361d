"""Nearest neighbours of generated samples among the training data (a memorisation check): in pixel
space and in an extractor's feature space, drawn as one PNG (each row: a sample, then its neighbours)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from gandist.metrics._util import as_numpy, pairwise_sq_dists


def nearest_indices(queries: Any, pool: Any, k: int = 5, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Indices [Q, k] of the k nearest pool entries for each query (flattened L2), and their distances."""
    q = as_numpy(queries, "queries").reshape(len(queries), -1)
    p = as_numpy(pool, "pool").reshape(len(pool), -1)
    k = min(k, len(p))
    idx = np.empty((len(q), k), dtype=np.int64)
    dist = np.empty((len(q), k))
    for i in range(0, len(q), batch):
        d = pairwise_sq_dists(q[i : i + batch], p)
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(d, part, 1).argsort(1)
        idx[i : i + batch] = np.take_along_axis(part, order, 1)
        dist[i : i + batch] = np.sqrt(np.take_along_axis(d, idx[i : i + batch], 1))
    return idx, dist


def nearest_neighbours_figure(
    fake: torch.Tensor, real: torch.Tensor, out: str | Path, k: int = 5,
    fake_feats: Any = None, real_feats: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """fake, real: images [N, C, H, W] in [-1, 1]. Writes the PNG; returns the neighbour indices and
    distances (pixel space, and feature space when features are given)."""
    from gandist.viz import save_grid

    pix_idx, pix_d = nearest_indices(fake, real, k)
    rows = [torch.cat([fake[i : i + 1], real[pix_idx[i]]]) for i in range(len(fake))]
    result = {"pixel_indices": pix_idx, "pixel_distances": pix_d}
    ncol = k + 1
    if fake_feats is not None and real_feats is not None:
        f_idx, f_d = nearest_indices(fake_feats, real_feats, k)
        rows = [torch.cat([r, real[f_idx[i]]]) for i, r in enumerate(rows)]
        result.update(feature_indices=f_idx, feature_distances=f_d)
        ncol = 2 * k + 1
    save_grid(torch.cat(rows), out, nrow=ncol)
    result["figure"] = str(out)
    return result
