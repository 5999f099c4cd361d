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
| `ddp` | torchrun / SLURM ranks | device, synchronised batch norm, rank 0's weights | + one flat all-reduce of a phase's gradients |
| `deepspeed` | torchrun / SLURM ranks | one DeepSpeed engine per optimizer (`gandist/strategies/deepspeed.py`) | the engine's |

`process-group` serves work that is split by rank but trains nothing together (distributed
evaluation); the data-parallel training strategies derive from it, so the loop and the families do
not change for them.

Data parallelism (`ddp`): every rank holds the whole G and D, takes a disjoint 1/W share of each global
batch (the data source slices the global stream by rank, the loop's latent draws are global draws
sliced by rank), and after a phase's micro-batches the gradients of the phase's networks are averaged
over ranks in one flat all-reduce, the choice of NVIDIA's StyleGAN3 training loop (StyleGAN2-ADA still
wraps each network in torch's DistributedDataParallel) rather than the wrapper: a GAN step runs several forward passes per backward,
differentiates D twice for R1 / WGAN-GP, runs D frozen in G's phase and grows networks mid-run, and
each of these needs a workaround under the wrapper (find_unused_parameters, re-wrapping, no_sync).
Here a frozen network's gradients are never reduced (they do not exist), gradient accumulation
reduces once per optimizer step by construction, and growth changes nothing. Batch norm is
synchronised over ranks (statistics of the global batch, as one process would compute them) and
floating buffers (running statistics, StyleGAN's w_avg) are averaged after every step, so every rank
holds the same networks and EMA, and W ranks reproduce one process with the same global batch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from gandist.errors import CheckpointError, UserError
from gandist.registry import register


class StrategyError(UserError):
    """A launch or device mistake: the message names the variable or setting and the fix."""


@dataclass(frozen=True)
class DistEnv:
    """Rank, world size and local rank of this process, as the launcher set them."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    restart: int = 0  # torchrun's restart count (--max-restarts): which incarnation of the workers this is
    agent_store: bool = False  # torchrun's agent serves the rendezvous store at MASTER_ADDR:MASTER_PORT

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
        restart = int(env.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)
        return cls(rank, world, local, restart, env.get("TORCHELASTIC_USE_AGENT_STORE") == "True")


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

    def max_over_ranks(self, value: int) -> int:
        """The largest of every rank's host integer (e.g. the number of a stop signal, 0 for none)."""
        return value

    def reduce_gradients(self, params: list[torch.Tensor]) -> None:
        """Make the gradients of `params` the global batch's (data parallelism averages over ranks)."""

    def sync_buffers(self, modules: list[nn.Module]) -> None:
        """Make floating buffers agree over ranks after a step (data parallelism averages them)."""

    # -- optimizer steps and their state (DeepSpeed's engines replace these; see deepspeed.py) -------
    # The defaults are what the loop did before strategies could own the step, so `single` and `ddp`
    # stay bit-identical.
    def prepare(
        self, cfg, networks: dict[str, list[nn.Module]], optimizers: dict[str, torch.optim.Optimizer]
    ) -> None:
        """Called once the optimizers exist: `networks[name]` are the modules optimizer `name` updates."""

    def backward_fn(self, optimizer: str):
        """The backward an objective's `backward()` runs in a phase of `optimizer`; None: `loss.backward()`."""
        return None

    def grad_norm(self, optimizer: str) -> torch.Tensor | None:
        """The L2 norm of the phase's gradients (health monitor) where the strategy holds them rather than
        the parameters' `.grad`, as a 0-dim tensor filled in by `step` at the latest; None: read `.grad`."""
        return None

    def step(self, optimizer: str, opt: torch.optim.Optimizer, ok: torch.Tensor) -> None:
        """Apply the phase's update where the 0-dim flag `ok` (every rank's loss finite) is True."""
        from gandist.train.optim import guarded_step

        guarded_step(opt, ok)

    def optimizer_states(self, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, dict]:
        """The optimizer states a checkpoint's optim.pt holds."""
        return {name: opt.state_dict() for name, opt in optimizers.items()}

    def load_optimizer_states(self, optimizers: dict[str, torch.optim.Optimizer], states: dict[str, dict],
                              path) -> None:  # fmt: skip
        missing = set(optimizers) - set(states)
        if missing:
            raise CheckpointError(
                f"checkpoint '{path}' has no optimizer state for {', '.join(sorted(missing))}"
            )
        for name, opt in optimizers.items():
            opt.load_state_dict(states[name])

    def save_extra(self, root, step: int):
        """Write state the strategy keeps outside optim.pt into a folder under `root` (a collective: every
        rank calls it) and return that folder; the checkpoint moves it inside before it counts. None: nothing."""
        return None

    def load_extra(self, path) -> None:
        """Restore what `save_extra` wrote, from checkpoint folder `path` (every rank calls it)."""

    # -- randomness -----------------------------------------------------------------------------
    def rng_state(self) -> dict[str, torch.Tensor]:
        """The global RNG states of this process (CPU, and this rank's GPU): part of every checkpoint."""
        out = {"torch_cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            out["cuda"] = torch.cuda.get_rng_state(self.device)
        return out

    def rng_states(self) -> dict[str, torch.Tensor]:
        """Every rank's RNG states for a checkpoint (a collective under several ranks)."""
        return self.rng_state()

    def gather_rank_tensors(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every rank's `tensors` (rank-local state for a checkpoint, a collective under several ranks), keyed
        `rank<r>.<name>`; one process keeps the names as they are."""
        return dict(tensors)

    def own_rank_tensors(self, tensors: dict[str, torch.Tensor], written_world: int) -> dict[str, torch.Tensor]:
        """This rank's part of what `gather_rank_tensors` wrote, with the `rank<r>.` prefix taken off: rank r
        of a run resumed on another number of ranks takes rank r mod the writers' count (one process's
        unprefixed names serve every rank)."""
        if not any(re.match(r"rank\d+\.", k) for k in tensors):
            return tensors
        own = f"rank{self.rank % written_world}."
        return {k[len(own) :]: v for k, v in tensors.items() if k.startswith(own)}

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
        if self.world_size == 1:
            return f"{self.name} on {self.device}"
        return f"{self.name} over {self.world_size} ranks ({self.device} each)"


_REDUCE_OPS = {"sum": "SUM", "max": "MAX", "min": "MIN"}
BACKENDS = ("auto", "nccl", "gloo")


def pick_backend(requested: str, device: torch.device) -> str:
    """NCCL on GPUs, gloo on CPUs; NCCL without a GPU is a launch mistake."""
    if requested not in BACKENDS:
        raise StrategyError(f"train.backend='{requested}' is not known; valid: {', '.join(BACKENDS)}")
    if requested == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if requested == "nccl" and device.type != "cuda":
        raise StrategyError(
            "train.backend=nccl needs GPUs but this rank runs on the CPU; use train.backend=gloo (or auto), "
            "or run where CUDA devices are visible"
        )
    return requested


class ProcessGroupStrategy(Strategy):
    """Several processes joined in one torch.distributed process group (NCCL on GPUs, gloo on CPUs).

    It creates the group in the constructor and destroys it in `close()`, which every entry point
    reaches on every exit path (`with build_strategy(...) as strategy:`), so no rank exits with a live
    group (gloo aborts such a process with 'terminate called without an active exception')."""

    name = "process-group"

    def __init__(self, device: torch.device, env: DistEnv, backend: str = "auto") -> None:
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
            dist.init_process_group(
                pick_backend(backend, self.device), rank=env.rank, world_size=env.world_size,
                store=self._store(env),
            )  # fmt: skip
            self._owns_group = True
        self._host_group = None  # a gloo group for host-side flags when the main group is NCCL

    def _store(self, env: DistEnv):
        """The rendezvous store; torchrun's agent's store under a prefix of its own per torchrun restart. The
        agent keeps that store across restarts (--max-restarts); without the prefix, a restarted rank can
        read the gloo address its dead predecessor published there, connect to nothing, and fail the
        restart. A store of the workers' own (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, as train.sbatch sets) is
        new at every restart and takes no prefix: the restart count is each node's own torchrun's, and after
        one node's ranks died it differs between nodes, whose ranks then never met (seen on 2 nodes)."""
        from datetime import timedelta

        addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        store = self._dist.TCPStore(addr, port, env.world_size, is_master=env.rank == 0 and not env.agent_store,
                                    timeout=timedelta(minutes=10), wait_for_workers=False)  # fmt: skip
        prefix = f"gandist/restart{env.restart}" if env.agent_store else "gandist"
        return self._dist.PrefixStore(prefix, store)

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

    def max_over_ranks(self, value: int) -> int:
        """The largest of every rank's host integer (a stop signal's number, 0 for none). A CPU collective:
        on GPUs it goes through a gloo side group, so it never waits for the device."""
        group = None
        if self._dist.get_backend() != "gloo":
            if self._host_group is None:
                self._host_group = self._dist.new_group(backend="gloo")
            group = self._host_group
        t = torch.tensor([int(value)], dtype=torch.int64)
        self._dist.all_reduce(t, op=self._dist.ReduceOp.MAX, group=group)
        return int(t.item())

    def rng_states(self) -> dict[str, torch.Tensor]:
        """Every rank's RNG states (a collective: all ranks call it), keyed `rank<r>.<name>`."""
        own = self.rng_state()
        out = {}
        for name in sorted(own):
            # the CPU generator's state has a fixed size: gather it as bytes through the backend's device
            t = own[name].to(self.device if self._dist.get_backend() == "nccl" else "cpu")
            for r, state in enumerate(self.all_gather(t)):
                out[f"rank{r}.{name}"] = state.cpu()
        return out

    def gather_rank_tensors(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every rank's `tensors`, keyed `rank<r>.<name>` (a collective: all ranks call it). The ranks must hold
        the same names, shapes and dtypes (state that grows alike on every rank: each rank's share of every
        batch has the same size); a mismatch is an error naming the tensor, never a hang."""
        names = sorted(tensors)
        described = [(k, tuple(tensors[k].shape), str(tensors[k].dtype)) for k in names]
        everyone: list = [None] * self.world_size
        self._dist.all_gather_object(everyone, described)
        for r, theirs in enumerate(everyone):
            if theirs != described:
                differ = sorted(set(map(tuple, theirs)) ^ set(described))
                raise CheckpointError(
                    f"rank {r} holds other rank-local state than rank {self.rank} ({differ[:2]}); it cannot be "
                    "checkpointed: report this as a bug"
                )
        on = self.device if self._dist.get_backend() == "nccl" else torch.device("cpu")
        out = {}
        for k in names:
            for r, t in enumerate(self.all_gather(tensors[k].to(on))):
                out[f"rank{r}.{k}"] = t.cpu()
        return out

    def close(self) -> None:
        if self._owns_group and self._dist.is_initialized():
            self._dist.destroy_process_group()
        self._owns_group = False
        self._host_group = None


class DataParallelStrategy(ProcessGroupStrategy):
    """Data parallelism with one flat gradient all-reduce per optimizer step (module docstring)."""

    name = "ddp"

    def __init__(self, device: torch.device, env: DistEnv, backend: str = "auto",
                 sync_batchnorm: bool = True) -> None:  # fmt: skip
        super().__init__(device, env, backend)
        self.sync_batchnorm = sync_batchnorm

    def wrap(self, module: nn.Module, role: str) -> nn.Module:
        module = module.to(self.device)
        if self.sync_batchnorm:
            from gandist.strategies.syncbn import convert_sync_batchnorm

            convert_sync_batchnorm(module)
        with torch.no_grad():  # every rank starts from rank 0's weights and buffers
            for t in [*module.parameters(), *module.buffers()]:
                self._dist.broadcast(t.data, src=0)
        return module

    def reduce_gradients(self, params: list[torch.Tensor]) -> None:
        """Average the gradients of `params` over ranks: one all-reduce of one flat buffer per dtype.
        Parameters without a gradient have none on every rank (the same graph runs everywhere)."""
        grads = [p.grad for p in params if p.grad is not None]
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for g in grads:
            by_dtype.setdefault(g.dtype, []).append(g)
        for group in by_dtype.values():
            flat = torch.cat([g.reshape(-1) for g in group])
            self._dist.all_reduce(flat, op=self._dist.ReduceOp.SUM)
            flat.div_(self.world_size)
            offset = 0
            for g in group:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def sync_buffers(self, modules: list[nn.Module]) -> None:
        """Average the floating buffers of `modules` over ranks, summed in float64 so that buffers equal
        on every rank come back bit-identical (constants, batch-norm statistics of the global batch)
        while rank-local ones (StyleGAN's w_avg) become the mean, as one process would have tracked it."""
        bufs = [b for m in modules for b in m.buffers() if b.is_floating_point()]
        if not bufs:
            return
        flat = torch.cat([b.detach().reshape(-1).double() for b in bufs])
        self._dist.all_reduce(flat, op=self._dist.ReduceOp.SUM)
        flat.div_(self.world_size)
        offset = 0
        with torch.no_grad():
            for b in bufs:
                b.copy_(flat[offset : offset + b.numel()].view_as(b))
                offset += b.numel()


STRATEGIES: dict[str, Callable[..., Strategy]] = {}  # train.strategy name -> builder (`register`)


def _rendezvous_defaults(env: DistEnv, backend: str, device: torch.device) -> None:
    """Check the backend fits the device (NCCL without GPUs fails before any rendezvous), and give
    `gandist train` run without torchrun (one rank) a local rendezvous address."""
    pick_backend(backend, device)
    if env.world_size == 1 and "MASTER_ADDR" not in os.environ:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))


@register(STRATEGIES, "single")
def _single(device: torch.device, env: DistEnv, backend: str, sync_batchnorm: bool) -> Strategy:
    """One process; a multi-process launch is refused (it would train W copies of the same run)."""
    if env.world_size > 1:
        raise StrategyError(
            f"launched with WORLD_SIZE={env.world_size} but train.strategy=single trains one process; "
            "run without torchrun, or choose a distributed strategy"
        )
    return Strategy(device, env)


@register(STRATEGIES, "ddp")
def _ddp(device: torch.device, env: DistEnv, backend: str, sync_batchnorm: bool) -> Strategy:
    _rendezvous_defaults(env, backend, device)
    return DataParallelStrategy(device, env, backend, sync_batchnorm)


def sum_over_ranks(t: torch.Tensor, world: int) -> torch.Tensor:
    """The sum of `t` over the ranks of the process group, differentiable: each rank's input receives the sum
    over ranks of the output's gradients, so a loss computed from global statistics on every rank, its
    gradients then averaged over ranks (`reduce_gradients`), gives one process's gradient (as synchronised
    batch norm). One rank: `t` itself."""
    if world == 1:
        return t
    from gandist.strategies.syncbn import _AllReduceSum

    return _AllReduceSum.apply(t)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
