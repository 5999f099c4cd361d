"""Where the work runs: one `Strategy` per process, built once by whoever starts the run and passed in.

The training strategies are registered by name in `STRATEGIES` (`train.strategy` picks one), like the
models, losses and datasets: `base.py` holds `single` and `ddp` and what every strategy shares,
`deepspeed.py` the DeepSpeed engines, `syncbn.py` synchronised batch norm. To add one, derive from
`Strategy` (or `DataParallelStrategy`), register a builder `(device, env, backend, sync_batchnorm) ->
Strategy` under its name, and add the name to `train.strategy`'s choices in `gandist/config.py` (a test
keeps the two equal). `auto` is not a training strategy: evaluation joins a process group when launched
with several ranks, else runs as `single`.
"""

from __future__ import annotations

from gandist.strategies import deepspeed as _deepspeed  # noqa: F401  (registers "deepspeed")
from gandist.strategies.base import (
    STRATEGIES,
    DataParallelStrategy,
    DistEnv,
    ProcessGroupStrategy,
    Strategy,
    StrategyError,
    select_device,
    sum_over_ranks,
)

__all__ = [
    "STRATEGIES",
    "DataParallelStrategy",
    "DistEnv",
    "ProcessGroupStrategy",
    "Strategy",
    "StrategyError",
    "build_strategy",
    "select_device",
    "strategy_from_config",
    "sum_over_ranks",
]


def build_strategy(name: str = "single", device: str = "auto", env: DistEnv | None = None,
                   backend: str = "auto", sync_batchnorm: bool = True) -> Strategy:  # fmt: skip
    """The strategy for this process. `single` trains in one process and refuses a multi-process
    launch; `ddp` and `deepspeed` train data-parallel over the launched ranks (one rank is fine);
    `auto` joins a process group when launched with several ranks (evaluation), else `single`."""
    env = env or DistEnv.from_environ()
    dev = select_device(device, env.local_rank)
    if name == "auto":
        return ProcessGroupStrategy(dev, env) if env.world_size > 1 else Strategy(dev, env)
    if name not in STRATEGIES:
        raise StrategyError(f"train.strategy='{name}' is not available; valid: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](dev, env, backend, sync_batchnorm)


def strategy_from_config(train, env: DistEnv | None = None) -> Strategy:
    """The strategy a run's `train` section asks for: the one place a training strategy is built from the
    config (`gandist train`, the benchmarks, the tests that start runs), so train.strategy, train.device,
    train.backend and train.sync_batchnorm all reach it."""
    return build_strategy(train.strategy, train.device, env, backend=train.backend,
                          sync_batchnorm=train.sync_batchnorm)  # fmt: skip
