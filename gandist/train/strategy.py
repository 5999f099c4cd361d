"""Where the training runs. Distributed state is read once, here, and handed to everything else."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from gandist.config import ConfigError, TrainConfig


@dataclass(frozen=True)
class Strategy:
    name: str
    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def select_device(requested: str) -> torch.device:
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is visible; use train.device=cpu or auto")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def build_strategy(cfg: TrainConfig) -> Strategy:
    if cfg.strategy == "single":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1:
            raise ConfigError(
                f"launched with WORLD_SIZE={world} but train.strategy=single trains one process; "
                "run without torchrun, or choose a distributed strategy"
            )
        return Strategy("single", select_device(cfg.device))
    raise ConfigError(f"train.strategy='{cfg.strategy}' is not available; valid: single")
