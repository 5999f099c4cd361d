"""Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) || p(y)), per split of the samples.

Splits follow torch-fidelity (the reference FID/IS/KID implementation gandist is compared with):
the N samples are shuffled by `np.random.RandomState(shuffle_seed).permutation(N)` (seed 2020, its
default) and split i holds shuffled positions [i N // splits, (i + 1) N // splits). Without a shuffle
seed the splits are the consecutive samples.

Per split, with q = mean_x p(y|x):  KL mean = mean_x sum_y p log p - sum_y q log q, so the score
streams: `ISAccumulator` keeps, per split, sum_x p [K] and sum_x sum_y p log p, never the probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gandist.metrics._util import as_numpy

IS_SHUFFLE_SEED = 2020  # torch-fidelity's rng_seed default


def split_of_samples(n: int, splits: int, shuffle_seed: int | None = IS_SHUFFLE_SEED) -> np.ndarray:
    """The split [0, splits) each of n samples falls in."""
    position = np.arange(n)
    if shuffle_seed is not None:
        perm = np.random.RandomState(shuffle_seed).permutation(n)  # shuffled position k holds sample perm[k]
        position = np.empty(n, dtype=np.int64)
        position[perm] = np.arange(n)
    # position k is in split i when i N // splits <= k < (i + 1) N // splits
    return np.searchsorted(np.arange(1, splits + 1) * n // splits, position, side="right")


def _scores(sum_p: np.ndarray, sum_plogp: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    q = sum_p / counts[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q_log_q = np.where(q > 0, q * np.log(q), 0.0).sum(1)
    scores = np.exp(sum_plogp / counts - q_log_q)
    return float(np.mean(scores)), float(np.std(scores))


def inception_score(
    probs: Any, splits: int = 10, shuffle_seed: int | None = IS_SHUFFLE_SEED
) -> tuple[float, float]:
    """probs: [N, K] class probabilities (rows sum to 1). Returns (mean, std) over the splits."""
    p = as_numpy(probs, "probs", ndim=2)
    if splits < 1 or len(p) < splits:
        raise ValueError(f"inception_score: need at least `splits`={splits} samples, got {len(p)}")
    if np.any(p < 0) or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError(
            "inception_score expects probabilities: non-negative rows summing to 1 (apply softmax)"
        )
    which = split_of_samples(len(p), splits, shuffle_seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0).sum(1)
    sum_p = np.zeros((splits, p.shape[1]))
    np.add.at(sum_p, which, p)
    return _scores(
        sum_p, np.bincount(which, plogp, splits), np.bincount(which, minlength=splits).astype(float)
    )


class ISAccumulator:
    """The Inception Score of N samples fed in any order and batching, by global sample index.

    It lives on the CPU (index_add_ has no deterministic CUDA kernel, and B x K logits per batch are
    cheap to move); `reduce` sums it over ranks on the strategy's device."""

    def __init__(
        self, n: int, classes: int, splits: int = 10, shuffle_seed: int | None = IS_SHUFFLE_SEED
    ) -> None:
        if splits < 1 or n < splits:
            raise ValueError(f"the Inception Score needs at least splits={splits} samples, got {n}")
        self.splits = splits
        self.which = torch.from_numpy(split_of_samples(n, splits, shuffle_seed))
        self.sum_p = torch.zeros(splits, classes, dtype=torch.float64)
        self.sum_plogp = torch.zeros(splits, dtype=torch.float64)
        self.counts = torch.zeros(splits, dtype=torch.float64)

    def update(self, logits: torch.Tensor, start: int) -> None:
        """logits [B, K] of samples start .. start + B - 1."""
        lg = logits.to(self.sum_p.device, torch.float64)
        p, logp = torch.softmax(lg, 1), torch.log_softmax(lg, 1)  # as torch-fidelity: log p from log_softmax
        idx = self.which[start : start + len(lg)]
        self.sum_p.index_add_(0, idx, p)
        self.sum_plogp.index_add_(0, idx, (p * logp).sum(1))
        self.counts.index_add_(0, idx, torch.ones_like(idx, dtype=torch.float64))

    def reduce(self, strategy) -> None:
        """Sum every rank's accumulators (one collective)."""
        if strategy.world_size > 1:
            flat = torch.cat([self.sum_p.reshape(-1), self.sum_plogp, self.counts]).to(strategy.device)
            strategy.all_reduce(flat, "sum")
            flat = flat.cpu()
            k = self.sum_p.numel()
            self.sum_p = flat[:k].reshape(self.sum_p.shape)
            self.sum_plogp, self.counts = flat[k : k + self.splits], flat[k + self.splits :]

    def score(self) -> tuple[float, float]:
        return _scores(self.sum_p.cpu().numpy(), self.sum_plogp.cpu().numpy(), self.counts.cpu().numpy())
