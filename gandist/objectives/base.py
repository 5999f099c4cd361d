"""Objectives and phases: what a family computes in each phase of a training step.

The shape is NVIDIA's stylegan2-ada-pytorch (`training_loop.py` + `loss.py`). The loop
(`gandist/train/loop.py`) owns the optimizers, the strategy, micro-batches, EMA, non-finite skipping,
schedules, signals, logs and checkpoints, and runs every phase the same way:

    freeze every network but the phase's, zero the optimizer's gradients,
    accumulate(phase, micro-batch, context) for each micro-batch  (the objective calls backward),
    all ranks agree whether the loss was finite, step the optimizer (or leave everything as it was),
    objective.after_step(phase)  (e.g. WGAN's weight clipping).

After all phases of a generator step it updates the EMA networks. The objective declares its
networks' roles, its optimizers, its phases and their order, and keeps whatever extra state it needs
(an image pool, a path-length mean, w_avg) for checkpoints. The loop knows no loss and no network by name.

A phase runs on generator steps where `step % interval == 0`, `repeat` times in a row (more on the steps
of its `warmup`, if any), with its loss multiplied by `gain`. Lazy regularisation (StyleGAN2, Sec. 3.1) is a phase `*reg` with interval N and
gain N whose optimizer uses lr * c and betas ** c with c = N / (N + 1); with N = 1 the penalty is part
of the main phase (`*both`).

| family | networks | phases per generator step, in order | extra state |
|---|---|---|---|
| classic (GAN, DCGAN, LSGAN, WGAN, WGAN-GP) | G, D | Dmain x k (Dboth x k when GP/R1 is paid every step; WGAN: x 100 on warm-up steps), Dreg every N, Gmain | none |
| PGGAN | G, D | Dboth (WGAN-GP lambda 10 + drift), Gmain; fade-in alpha from the schedule | none |
| StyleGAN | G (mapping, synthesis), D | the classic phases: Dmain, Dreg every 16 (R1), Gmain; G mixes styles and tracks w_avg in its own training-mode forward | w_avg (a buffer of G) |
| semi-supervised GAN (`families/sgan/`) | G (optionally class-conditional), D (K logits + implicit fake, or K+1); D_ema with loss.d_average | Dmain (labelled cross-entropy + unsupervised real/fake), Gmain (feature matching or non-saturating; + class cross-entropy for a conditional G); loss.mode=supervised: Dmain alone (the baseline) | none (the labelled-stream position lives in the data source's state) |
| CycleGAN (`families/cyclegan/`) | G_AB, G_BA, D_A, D_B | Gmain (both generators: adversarial + cycle + identity), Dmain (both critics on the Gmain batch, fakes from the pools) | two pools of 50 past fakes (images, count, random stream) |
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gandist.config import Config
from gandist.data.base import Batch

OBJECTIVES: dict[str, Callable[..., Objective]] = {}


@dataclass(frozen=True)
class Warmup:
    """More runs of a phase on some generator steps: `repeat` of them on the first `first` generator steps and
    on every `every`-th one (0: only the first). WGAN's critic warm-up (Arjovsky et al.'s main.py:
    `Diters = 100 if gen_iterations < 25 or gen_iterations % 500 == 0 else opt.Diters`)."""

    repeat: int
    first: int
    every: int

    def applies(self, step: int) -> bool:
        return step < self.first or (self.every > 0 and step % self.every == 0)


def d_steps_warmup(train: Any) -> Warmup | None:
    """`train.d_steps_warmup` as the D phase's warm-up; None where it is off (0)."""
    if not train.d_steps_warmup:
        return None
    return Warmup(train.d_steps_warmup, train.d_steps_warmup_first, train.d_steps_warmup_every)


@dataclass(frozen=True)
class Phase:
    name: str  # Dmain, Dreg, Dboth, Gmain, Greg, ...
    optimizer: str  # the optimizer that steps after the phase
    trains: tuple[str, ...]  # networks that receive gradients; every other network is frozen
    interval: int = 1  # runs on generator steps with step % interval == 0
    repeat: int = 1  # consecutive runs per generator step (k D steps per G step)
    gain: float = 1.0  # the loss is multiplied by this (lazy regularisation: the interval)
    reals: bool = True  # draws a batch of real data
    warmup: Warmup | None = None  # more runs on some generator steps (WGAN's critic warm-up)

    def repeats(self, step: int) -> int:
        """Consecutive runs at the generator step that follows `step` completed ones: a function of the step
        alone, so every rank runs (and draws real batches for) the same number and a resume continues it."""
        if self.warmup is not None and self.warmup.applies(step):
            return self.warmup.repeat
        return self.repeat


@dataclass(frozen=True)
class OptimizerSpec:
    networks: tuple[str, ...]  # whose parameters it updates
    lr: float
    reg_interval: int = 1  # lazy regularisation interval of this optimizer's networks (Adam correction)
    role: str = "G"  # "G" or "D": which learning rate of a schedule's per-resolution table applies


@dataclass
class PhaseContext:
    """What the loop hands an objective for one micro-batch."""

    step: int  # generator steps completed before this one
    gain: float | torch.Tensor  # phase gain x micro-batch share (x the fp16 loss scale, a device tensor)
    generator: torch.Generator  # the loop's CPU stream for latents and other draws (state in checkpoints)
    device: torch.device
    z_dim: int
    batch_size: int  # samples in this micro-batch
    extras: dict[str, Any] = field(default_factory=dict)  # schedule values (fade-in alpha, resolution)
    rank: int = 0  # data parallelism: this rank's share of every draw (the stream is the same on all ranks)
    world: int = 1

    def _share(self, draw: torch.Tensor, n: int) -> torch.Tensor:
        return draw if self.world == 1 else draw[self.rank * n : (self.rank + 1) * n]

    def latents(self, n: int | None = None) -> torch.Tensor:
        """z ~ N(0, I) [n, z_dim] from the loop's stream, on the device. Under W ranks the stream draws the
        global [W * n, z_dim] and each rank takes its slice, so W ranks see one process's latents."""
        n = n or self.batch_size
        z = torch.randn(n * self.world, self.z_dim, generator=self.generator)
        return self._share(z, n).to(self.device)

    def randint(self, high: int, n: int | None = None) -> torch.Tensor:
        """Integers in [0, high) [n] from the loop's stream (this rank's slice of a global draw), on the device."""
        n = n or self.batch_size
        return self._share(torch.randint(high, (n * self.world,), generator=self.generator), n).to(self.device)

    def uniform(self, n: int, *shape: int) -> torch.Tensor:
        """U[0, 1) [n, *shape] from the loop's stream (this rank's slice of a global draw), on the device."""
        u = torch.rand(n * self.world, *shape, generator=self.generator)
        return self._share(u, n).to(self.device)


@dataclass
class PhaseResult:
    loss: (
        torch.Tensor
    )  # the scalar whose backward was taken (before the gain): its finiteness decides the step
    stats: dict[str, torch.Tensor]  # detached 0-dim statistics, read on the host only at log points


class Objective:
    """Base class. Subclasses set `networks` (the wrapped modules by name) and implement the rest."""

    ema: dict[str, str] = {"G_ema": "G"}  # EMA network name -> the network it averages
    # EMA networks averaged with a fixed decay per generator step instead of train.ema_kimg's half-life
    ema_decay: dict[str, float] = {}
    sample_network = (
        "G"  # the generator of fixed-z pictures, evaluations and `gandist generate` (its EMA if kept)
    )

    def __init__(self, cfg: Config, networks: dict[str, nn.Module]) -> None:
        self.cfg = cfg
        self.networks = networks

    def optimizers(self) -> dict[str, OptimizerSpec]:
        raise NotImplementedError

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def accumulate(self, phase: Phase, batch: Batch | None, ctx: PhaseContext) -> PhaseResult:
        """Compute the phase's loss on one micro-batch, call `(loss * ctx.gain).backward()`, return it."""
        raise NotImplementedError

    def after_step(self, phase: Phase) -> None:
        """Runs after the optimizer step of `phase` (e.g. weight clipping)."""

    def pictures(self, net: nn.Module, z: torch.Tensor, data: Any) -> torch.Tensor:
        """What the fixed-latent sample grids and the health probe show: `net` (the sample network) on
        latents z [N, z_dim]. A family whose generators translate images instead (CycleGAN) overrides it,
        drawing its inputs from `data` (the run's data source, read with `peek`)."""
        return net(z)

    @classmethod
    def checkpoint_metrics(cls, path: Any) -> dict[str, Any]:
        """What `gandist eval` reports for a checkpoint of this objective's family besides the sample metrics
        (the semi-supervised GAN: D's accuracy as a classifier, under 'classifier'); most have none."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Extra state for checkpoints: tensors under 'tensors', JSON-serialisable values under 'values'."""
        return {"tensors": {}, "values": {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def uncompiled(module: nn.Module) -> nn.Module:
    """The module inside a `torch.compile` wrapper: gradient penalties take gradients of gradients,
    which compiled graphs (aot_autograd) cannot, so they run through this one."""
    return getattr(module, "_orig_mod", module)


# The backward of the phase that runs now, set by the loop from its strategy (`Strategy.backward_fn`):
# None is autograd's `loss.backward()`; DeepSpeed passes its engine's `backward`, which objectives need
# not know about.
_BACKWARD: contextvars.ContextVar[Callable[[torch.Tensor], Any] | None] = contextvars.ContextVar(
    "gandist_backward", default=None
)


@contextlib.contextmanager
def backward_through(fn: Callable[[torch.Tensor], Any] | None):
    """Within this block `backward()` calls `fn(scaled loss)` instead of `.backward()` (None: unchanged)."""
    token = _BACKWARD.set(fn)
    try:
        yield
    finally:
        _BACKWARD.reset(token)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 (autocast) tensors widened to fp32 for losses and penalties; fp32 and float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def backward(loss: torch.Tensor, gain: float | torch.Tensor) -> None:
    """loss * gain backward; a gain of exactly 1.0 adds no multiplication (keeps results bit-identical)."""
    scaled = loss if isinstance(gain, float) and gain == 1.0 else loss * gain
    fn = _BACKWARD.get()
    if fn is None:
        scaled.backward()
    else:
        fn(scaled)


def build_objective(name: str, cfg: Config, networks: dict[str, nn.Module], kind: str) -> Objective:
    """The objective registered as `name`, built for a run's networks."""
    return objective_class(name)(cfg, networks, kind)


def objective_class(name: str) -> Callable[..., Objective]:
    """The objective registered as `name`: a family's own (`gandist/families/<name>/objective.py`) or a
    shared one (`gandist/objectives/<name>.py`, the classic objective)."""
    if name not in OBJECTIVES:
        import importlib

        from gandist import families

        families.import_part("objective")
        if name not in OBJECTIVES:
            importlib.import_module(f"gandist.objectives.{name}")
    return OBJECTIVES[name]
