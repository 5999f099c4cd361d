"""The data-source interface and registry."""

from __future__ import annotations

import functools
from typing import Any

import torch

from gandist.config import ConfigError, DataConfig
from gandist.rng import position_generator  # noqa: F401  (re-exported for the sources)

DATASETS: dict[str, type[DataSource]] = {}


class DataSource:
    """An infinite stream of training samples. Subclasses implement `_draw(position, n)`."""

    kind: str = "images"  # "images" ([N, C, H, W] in [-1, 1]) or "points" ([N, 2])

    def __init__(self, cfg: DataConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.position = 0  # samples drawn so far: the whole loader state

    # -- interface -----------------------------------------------------------------------------
    @staticmethod
    def check(cfg: DataConfig) -> None:
        """Raise ConfigError for settings this source cannot serve, before training starts."""

    @property
    def shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def size(self) -> int | None:
        """Number of distinct samples (None for the infinite synthetic mixtures)."""
        return None

    def _draw(self, position: int, n: int) -> torch.Tensor:
        raise NotImplementedError

    # -- shared behaviour ----------------------------------------------------------------------
    def sample(self, n: int) -> torch.Tensor:
        """The next `n` samples of the stream; advances the position."""
        out = self._draw(self.position, n)
        self.position += n
        return out

    def peek(self, n: int, position: int = 0) -> torch.Tensor:
        """`n` samples from a given position without moving the stream (evaluation, reference grids)."""
        return self._draw(position, n)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
        self.seed = int(state["seed"])


def build_dataset(cfg: DataConfig, seed: int) -> DataSource:
    if cfg.name not in DATASETS:
        raise ConfigError(f"unknown dataset '{cfg.name}'; valid: {', '.join(sorted(DATASETS))}")
    if cfg.name == "folder" and cfg.loader == "dali":
        from gandist.data.dali import DaliFolder

        return DaliFolder(cfg, seed)
    return DATASETS[cfg.name](cfg, seed)


@functools.lru_cache(maxsize=8)
def _epoch_permutation(n_items: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The order of epoch `epoch`: computed once, not per batch (a randperm of 70k files per call adds up)."""
    return tuple(torch.randperm(n_items, generator=position_generator(seed, epoch, salt=1)).tolist())


def epoch_indices(n_items: int, seed: int, position: int, n: int) -> list[int]:
    """Items at global stream positions [position, position + n): a fresh permutation every epoch."""
    out: list[int] = []
    for p in range(position, position + n):
        epoch, offset = divmod(p, n_items)
        out.append(_epoch_permutation(n_items, seed, epoch)[offset])
    return out


def mirror(images: torch.Tensor, seed: int, position: int) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2, decided by (seed, position) alone."""
    flips = torch.rand(images.shape[0], generator=position_generator(seed, position, salt=2)) < 0.5
    return torch.where(flips[:, None, None, None], images.flip(-1), images)
