"""Where the work runs. Distributed state is read once, here, and handed to everything else.

A `Strategy` is one object, built once by the entry point (the CLI) and passed down to the loop,
the data sources, the evaluation and the writers. It answers: which device, which rank of how many,
am I the main process; it wraps networks for the kind of parallelism it implements, offers the
collectives the loop needs (a finiteness flag, sums, gathers, a barrier) and the RNG states a
checkpoint must hold. Nothing else in gandist reads RANK, WORLD_SIZE, LOCAL_RANK or picks a device.

| strategy | processes | `wrap` | collectives |
|---|---|---|---|
| `single` | one | moves the module to the device | identities |
| `process-group` | torchrun / SLURM ranks | moves the module to the device (no gradient sync) | torch.distributed |

`process-group` serves work that is split by rank but trains nothing together (distributed
evaluation); the data-parallel training strategies (DDP, DeepSpeed) derive from it and override
`wrap`, so the loop and the families do not change for them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from gandist.errors import UserError


class StrategyError(UserError):
    """A launch or device mistake: the message names the variable or setting and the fix."""


@dataclass(frozen=True)
class DistEnv:
    """Rank, world size and local rank of this process, as the launcher set them."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> DistEnv:
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK; without them one process (rank 0 of 1)."""
        env = os.environ if environ is None else environ
        if "WORLD_SIZE" not in env:
            return cls()
        try:
            rank, world = int(env.get("RANK", "0")), int(env["WORLD_SIZE"])
            local = int(env.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise StrategyError(
                "RANK, WORLD_SIZE and LOCAL_RANK must be integers; launch with torchrun or set them correctly"
            ) from None
        if world < 1 or not 0 <= rank < world or local < 0:
            raise StrategyError(f"inconsistent launch: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}")
        return cls(rank, world, local)


def select_device(requested: str, local_rank: int = 0) -> torch.device:
    """`auto`: this rank's GPU when CUDA is visible, else the CPU."""
    if requested not in ("auto", "cpu", "cuda"):
        raise StrategyError(f"device '{requested}' is not known; valid: auto, cpu, cuda")
    if requested == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if requested == "cuda":
            raise StrategyError(
                "train.device=cuda but no CUDA device is visible; use train.device=cpu or auto"
            )
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise StrategyError(
            f"local rank {local_rank} needs GPU {local_rank}, but only {count} are visible; "
            f"start at most {count} processes per node"
        )
    return torch.device("cuda", local_rank)


class Strategy:
    """One process, one device. The base of every strategy: collectives are identities here."""

    name = "single"

    def __init__(self, device: torch.device, env: DistEnv | None = None) -> None:
        self.device = torch.device(device)
        self.env = env or DistEnv()
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    # -- who am I -------------------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    @property
    def local_rank(self) -> int:
        return self.env.local_rank

    @property
    def is_main(self) -> bool:
        """Only the main rank writes logs, samples and checkpoints."""
        return self.env.rank == 0

    # -- networks -------------------------------------------------------------------------------
    def wrap(self, module: nn.Module, role: str) -> nn.Module:
        """Prepare a network for training under this strategy; `role` is its name in the objective
        (`G`, `D`, ...), so a strategy can treat networks differently (e.g. D never syncs buffers)."""
        return module.to(self.device)

    @staticmethod
    def unwrap(module: nn.Module) -> nn.Module:
        """The plain network inside whatever `wrap` returned (for checkpoints and EMA)."""
        return getattr(module, "module", module)

    # -- collectives (identities in one process) ------------------------------------------------
    def all_reduce_flag(self, flag: torch.Tensor) -> torch.Tensor:
        """True where every rank's flag is True (e.g. 'all losses finite'): one collective, no sync."""
        return flag

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In-place sum / mean / max over ranks; returns the tensor."""
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """This tensor from every rank, in rank order (same shape on every rank)."""
        return [tensor]

    def barrier(self) -> None:
        pass

    # -- randomness -----------------------------------------------------------------------------
    def rng_state(self) -> dict[str, torch.Tensor]:
        """The global RNG states of this process (CPU, and this rank's GPU): part of every checkpoint."""
        out = {"torch_cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            out["cuda"] = torch.cuda.get_rng_state(self.device)
        return out

    def set_rng_state(self, state: Mapping[str, torch.Tensor]) -> None:
        torch.set_rng_state(state["torch_cpu"])
        if self.device.type == "cuda" and "cuda" in state:
            torch.cuda.set_rng_state(state["cuda"], self.device)

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        """Release what the strategy holds (process groups). Safe to call twice."""

    def __enter__(self) -> Strategy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def describe(self) -> str:
        return f"{self.name} on {self.device}" + (
            f", rank {self.rank} of {self.world_size}" if self.world_size > 1 else ""
        )


_REDUCE_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}


class ProcessGroupStrategy(Strategy):
    """Several processes joined in one torch.distributed process group (NCCL on GPUs, gloo on CPUs).

    It creates the group in the constructor and destroys it in `close()`, which every entry point
    reaches on every exit path (`with build_strategy(...) as strategy:`), so no rank exits with a live
    group (gloo aborts such a process with 'terminate called without an active exception')."""

    name = "process-group"

    def __init__(self, device: torch.device, env: DistEnv) -> None:
        super().__init__(device, env)
        import torch.distributed as dist

        self._dist = dist
        self._owns_group = False
        if not dist.is_initialized():
            missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
            if missing:
                raise StrategyError(
                    f"WORLD_SIZE={env.world_size} but {' and '.join(missing)} is not set; launch with "
                    "torchrun (it sets them) or export the rendezvous address and port"
                )
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, rank=env.rank, world_size=env.world_size)
            self._owns_group = True

    def all_reduce_flag(self, flag: torch.Tensor) -> torch.Tensor:
        as_int = flag.to(torch.int32)
        self._dist.all_reduce(as_int, op=self._dist.ReduceOp.MIN)
        return as_int.bool()

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if op == "mean":
            self._dist.all_reduce(tensor, op=self._dist.ReduceOp.SUM)
            return tensor.div_(self.world_size)
        self._dist.all_reduce(tensor, op=getattr(self._dist.ReduceOp, _REDUCE_OPS[op]))
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        out = [torch.empty_like(tensor) for _ in range(self.world_size)]
        self._dist.all_gather(out, tensor.contiguous())
        return out

    def barrier(self) -> None:
        self._dist.barrier()

    def close(self) -> None:
        if self._owns_group and self._dist.is_initialized():
            self._dist.destroy_process_group()
        self._owns_group = False


STRATEGIES = (
    "single",
)  # what train.strategy accepts today; ddp and deepspeed derive from ProcessGroupStrategy


def build_strategy(name: str = "single", device: str = "auto", env: DistEnv | None = None) -> Strategy:
    """The strategy for this process. `single` trains in one process and refuses a multi-process
    launch; `auto` joins a process group when launched with several ranks (evaluation), else `single`."""
    env = env or DistEnv.from_environ()
    dev = select_device(device, env.local_rank)
    if name == "single":
        if env.world_size > 1:
            raise StrategyError(
                f"launched with WORLD_SIZE={env.world_size} but train.strategy=single trains one process; "
                "run without torchrun, or choose a distributed strategy"
            )
        return Strategy(dev, env)
    if name == "auto":
        return ProcessGroupStrategy(dev, env) if env.world_size > 1 else Strategy(dev, env)
    raise StrategyError(f"train.strategy='{name}' is not available; valid: {', '.join(STRATEGIES)}")
