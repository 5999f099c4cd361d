"""The data-source interface and registry (torch). Config classes: `config.py`."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from gandist.config import Section, section_name
from gandist.rng import SALTS, position_generator

DATASETS: dict[str, type[DataSource]] = {}
_SOURCES = ("gandist.data.synthetic", "gandist.data.digits", "gandist.data.mnist", "gandist.data.folder",
            "gandist.data.unpaired", "gandist.data.stacked")


def load_sources() -> None:
    """Import every source module so the registry is complete."""
    for module in _SOURCES:
        importlib.import_module(module)


@dataclass
class Batch:
    """What a data source yields for one step: the samples and whatever else the data has."""

    x: torch.Tensor  # images [N, C, H, W] in [-1, 1], or 2-D points [N, 2]
    labels: torch.Tensor | None = None  # [N] class indices (int64), where the data is labelled
    domain: torch.Tensor | None = None  # [N] domain indices, for unpaired translation between domains

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)
        return Batch(move(self.x), move(self.labels), move(self.domain))

    def split(self, size: int) -> list[Batch]:
        """Consecutive micro-batches of `size` samples (the last may be shorter)."""
        parts = [t.split(size) if t is not None else None for t in (self.x, self.labels, self.domain)]
        return [
            Batch(parts[0][i], *(p[i] if p is not None else None for p in parts[1:]))
            for i in range(len(parts[0]))
        ]


class DataSource:
    """An infinite stream of training samples. Subclasses implement `_draw(position, n)`."""

    kind: str = "images"  # "images" ([N, C, H, W] in [-1, 1]) or "points" ([N, 2])
    whole_batches: bool = False  # serves only whole batches of one size (a prefetching pipeline: DALI)

    def __init__(self, cfg: Section, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.position = 0  # samples drawn so far: the whole loader state
        self.served_resolution: int | None = None  # images box-filtered to this size (progressive growing)
        self.rank, self.world = 0, 1  # data parallelism: this rank's share of every global batch

    def shard(self, rank: int, world: int) -> None:
        """Serve rank `rank` of `world` its slice of each global batch: `next_batch(n)` returns the
        samples at [position + rank * n, position + (rank + 1) * n) and advances the (global) position
        by world * n, so the ranks' batches are disjoint and together are one process's batch."""
        self.rank, self.world = rank, world

    # -- interface -----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def size(self) -> int | None:
        """Number of distinct samples (None for the infinite synthetic mixtures)."""
        return None

    def _draw(self, position: int, n: int) -> torch.Tensor:
        raise NotImplementedError

    def _draw_batch(self, position: int, n: int) -> Batch:
        """The samples at [position, position + n) with their labels; sources with labels override."""
        return Batch(self._draw(position, n))

    # -- shared behaviour ----------------------------------------------------------------------
    def sample(self, n: int) -> torch.Tensor:
        """The next `n` samples of the stream; advances the position."""
        out = self._draw(self.position, n)
        self.position += n
        return out

    def next_batch(self, n: int) -> Batch:
        """The next `n` samples of the stream as a Batch (this rank's share, see `shard`); advances the
        position."""
        out = self._draw_batch(self.position + self.rank * n, n)
        self.position += n * self.world
        out.x = self._served(out.x)
        return out

    def peek(self, n: int, position: int = 0) -> torch.Tensor:
        """`n` samples from a given position without moving the stream (evaluation, reference grids)."""
        return self._served(self._draw(position, n))

    def serve_resolution(self, resolution: int | None) -> None:
        """From now on serve images box-filtered down to `resolution` (the mip-maps of progressive growing,
        Karras et al. 2018); None serves the source's own resolution. The stream itself is unchanged."""
        self.served_resolution = resolution

    def _served(self, x: torch.Tensor) -> torch.Tensor:
        r = self.served_resolution
        if r is None or self.kind != "images" or x.shape[-1] == r:
            return x
        from gandist.train.schedule import downsample

        return downsample(x, r)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
        self.seed = int(state["seed"])


def build_dataset(cfg: Section, seed: int, strategy: Any = None) -> DataSource:
    """The source configured by a `data` section. Under several ranks (`strategy`), sources that shard
    (DALI) take this rank's share, and a GPU strategy gets GPU decoding."""
    load_sources()
    name = section_name(cfg)
    if type(cfg).dali and cfg.loader == "dali":
        from gandist.data import dali

        cls = getattr(dali, type(cfg).dali)
        if strategy is None:
            return cls(cfg, seed)
        device_id = strategy.device.index if strategy.device.type == "cuda" else None
        return cls(cfg, seed, rank=strategy.rank, world=strategy.world_size, device_id=device_id)
    source = DATASETS[name](cfg, seed)
    if strategy is not None and strategy.world_size > 1:
        source.shard(strategy.rank, strategy.world_size)
    return source


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


# Positions per generator of `position_blocks`: seeding a torch.Generator and each draw from it cost about
# 10 us (so one generator per sample would cost more than a 2-D mixture's training step); with blocks of
# 256 a batch of 256 at an aligned position costs one generator, as a per-batch draw does, and a rank's
# share or an unaligned batch one or two (benchmarks/data/bench_position_draws.py).
POSITION_BLOCK = 256


def position_blocks(seed: int, salt: int, position: int, n: int,
                    draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:  # fmt: skip
    """Rows for the stream positions [position, position + n), each a pure function of (seed, salt, its
    position): the positions are cut into aligned blocks of POSITION_BLOCK, block b is `draw(generator of
    (seed, b, salt))` (always POSITION_BLOCK rows, so always the same values), and the rows are sliced out.
    So a batch drawn in one piece equals the same positions drawn in any split (ranks, micro-batches,
    resume), bit for bit. Negative positions are fine (floor division)."""
    first, last = position // POSITION_BLOCK, (position + n - 1) // POSITION_BLOCK
    blocks = [draw(position_generator(seed, b, salt)) for b in range(first, max(last, first) + 1)]
    for b in blocks:
        assert b.shape[0] == POSITION_BLOCK, f"a block draw gave {b.shape[0]} rows, not {POSITION_BLOCK}"
    out = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
    start = position - first * POSITION_BLOCK
    return out[start : start + n]


def mirror(images: torch.Tensor, seed: int, position: int, salt: str = "mirror") -> torch.Tensor:
    """Flip each image horizontally with probability 1/2; image i's flip is decided by (seed, salt,
    position + i) alone, so a rank's share of a batch is flipped as the same images of the whole batch."""
    u = position_blocks(seed, SALTS[salt], position, images.shape[0],
                        lambda g: torch.rand(POSITION_BLOCK, generator=g))  # fmt: skip
    flips = u < 0.5
    return torch.where(flips[:, None, None, None], images.flip(-1), images)


def mirror_flags(seed: int, positions: list[int], salt: str = "mirror") -> list[bool]:
    """`mirror`'s flip decision for each of the given stream positions (any order, any gaps): the DALI
    pipelines take their flags from here, so they flip exactly the images the torch loaders flip."""
    blocks: dict[int, torch.Tensor] = {}
    out = []
    for p in positions:
        b, k = divmod(p, POSITION_BLOCK)
        if b not in blocks:
            blocks[b] = torch.rand(POSITION_BLOCK, generator=position_generator(seed, b, SALTS[salt])) < 0.5
        out.append(bool(blocks[b][k]))
    return out
