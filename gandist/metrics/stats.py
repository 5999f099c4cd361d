"""Streaming feature statistics: the mean and covariance FID needs, without holding the features.

`RunningStats` merges per-batch statistics with Chan et al.'s pairwise update (1979), in float64:

    n = n_a + n_b,  delta = mean_b - mean_a,  mean = mean_a + delta * n_b / n,
    M2 = M2_a + M2_b + delta delta^T * n_a n_b / n,         covariance = M2 / (n - 1)

Each batch's own M2 is computed around its own mean, so nothing cancels catastrophically (the
textbook sum-of-outer-products form loses digits when |mean|^2 >> variance, as Inception's
non-negative pool features have). Memory: D + D^2 float64 (32 MiB for Inception's 2048), whatever N.
"""

from __future__ import annotations

import torch


class RunningStats:
    def __init__(self, dim: int, device: torch.device | str = "cpu") -> None:
        self.n = 0
        self.mean = torch.zeros(dim, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    def update(self, feats: torch.Tensor) -> None:
        """Add a batch of features [B, D] (any float dtype, on the stats' device)."""
        if feats.dim() != 2 or feats.shape[1] != self.dim:
            raise ValueError(
                f"RunningStats({self.dim}): expected features [B, {self.dim}], got {list(feats.shape)}"
            )
        if len(feats) == 0:
            return
        f = feats.to(self.mean.device, torch.float64)
        mean_b = f.mean(0)
        c = f - mean_b
        self._merge(len(f), mean_b, c.T @ c)

    def _merge(self, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        n_a, n = self.n, self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * (n_b / n)
        self.m2 += m2_b
        self.m2 += torch.outer(delta, delta) * (n_a * n_b / n)
        self.n = n

    def merge(self, other: RunningStats) -> None:
        if other.n:
            self._merge(other.n, other.mean.to(self.mean.device), other.m2.to(self.mean.device))

    def covariance(self) -> torch.Tensor:
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.n}")
        return self.m2 / (self.n - 1)

    def numpy(self):
        """(mean [D], covariance [D, D]) as float64 numpy arrays."""
        return self.mean.cpu().numpy(), self.covariance().cpu().numpy()

    def flat(self) -> torch.Tensor:
        """[n, mean, M2] in one float64 vector (one collective per rank)."""
        return torch.cat([torch.tensor([float(self.n)], dtype=torch.float64, device=self.mean.device),
                          self.mean, self.m2.reshape(-1)])  # fmt: skip

    @classmethod
    def from_flat(cls, v: torch.Tensor, dim: int) -> RunningStats:
        out = cls(dim, v.device)
        out.n, out.mean, out.m2 = int(v[0]), v[1 : 1 + dim].clone(), v[1 + dim :].reshape(dim, dim).clone()
        return out


def merge_over_ranks(stats: RunningStats, strategy) -> RunningStats:
    """Every rank's statistics merged in rank order (the same result on every rank)."""
    if strategy.world_size == 1:
        return stats
    parts = strategy.all_gather(stats.flat())  # one collective: D^2 + D + 1 float64 per rank
    out = RunningStats(stats.dim, stats.mean.device)
    for v in parts:
        out.merge(RunningStats.from_flat(v, stats.dim))
    return out
