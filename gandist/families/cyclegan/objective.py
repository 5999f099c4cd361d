"""The CycleGAN objective (Zhu et al. 2017; the official junyanz/pytorch-CycleGAN-and-pix2pix `cycle_gan_model`).

Networks G_AB: A -> B, G_BA: B -> A, D_A (real A vs G_BA's fakes), D_B (real B vs G_AB's fakes). Each
generator step, on one batch of unpaired images (A, B interleaved, `gandist.data.unpaired`):

  Gmain (D_A, D_B frozen):  L_G = (D_B(G_AB(a)) - 1)^2 + (D_A(G_BA(b)) - 1)^2              (LSGAN, Sec. 4)
                                  + lambda (|G_BA(G_AB(a)) - a| + |G_AB(G_BA(b)) - b|)       (cycle, Eq. 2)
                                  + lambda_idt lambda (|G_AB(b) - b| + |G_BA(a) - a|)        (identity, Sec. 5.2)
  Dmain:  L_D_X = 0.5 ((D_X(real) - 1)^2 + D_X(fake from the pool)^2) for X in A, B

(means over pixels and patches). The D phase reuses the Gmain batch and its fakes, as the official code,
through a stash the G phase fills and the D phase empties in micro-batch order: the loop draws no batch
for it. Each D sees a fake from a pool of 50 past fakes (Shrivastava et al. 2017): the first 50 go in and
come out unchanged; after that each new fake, with probability 1/2, takes the place of a random stored one,
which is returned instead. The pools (images, count and their random stream) are checkpointed. Under data
parallelism each rank pools its own fakes (as the official code under DDP), so W ranks equal one process only
until the pools fill; every rank's pools are checkpointed (`Strategy.gather_rank_tensors`), so a multi-rank
resume is exact.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gandist.config import Config
from gandist.data.base import Batch
from gandist.objectives.base import (
    OBJECTIVES,
    Objective,
    OptimizerSpec,
    Phase,
    PhaseContext,
    PhaseResult,
    backward,
)
from gandist.registry import register
from gandist.rng import stream


class ImagePool:
    """A buffer of up to `size` past fakes (the official `ImagePool`), random choices from its own CPU stream."""

    def __init__(self, size: int, generator: torch.Generator) -> None:
        self.size, self.generator = size, generator
        self.images: list[torch.Tensor] = []  # each [C, H, W], detached

    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        """fakes [N, C, H, W] -> [N, C, H, W]: each fake, or (after the pool is full, with probability 1/2)
        a stored one it replaces."""
        if self.size == 0:
            return fakes.detach()
        out = []
        for image in fakes.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif (
                float(torch.rand((), generator=self.generator)) > 0.5
            ):  # a host value: the stream is on the CPU
                i = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[i])
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state(self, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {f"{prefix}.rng": self.generator.get_state()}
        if self.images:
            tensors[f"{prefix}.images"] = torch.stack(self.images).contiguous()
        return tensors, {f"{prefix}.count": len(self.images)}

    def load(self, prefix: str, tensors: dict[str, torch.Tensor], values: dict[str, Any], device) -> None:
        self.generator.set_state(tensors[f"{prefix}.rng"])
        count = int(values.get(f"{prefix}.count", 0))
        self.images = list(tensors[f"{prefix}.images"].to(device).unbind(0)) if count else []
        assert len(self.images) == count, f"{prefix}: {len(self.images)} images for a count of {count}"


def lsgan_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """0.5 (mean (D(real) - 1)^2 + mean D(fake)^2) (the official loss_D_basic with gan_mode lsgan)."""
    return 0.5 * ((d_real - 1).square().mean() + d_fake.square().mean())


def lsgan_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """mean (D(G(x)) - 1)^2."""
    return (d_fake - 1).square().mean()


def generator_terms(G_AB, G_BA, D_A, D_B, a: torch.Tensor, b: torch.Tensor, cycle: float, identity: float):
    """The generator loss and its terms for real a [N, C, H, W] (domain A) and b (domain B); also returns the
    fakes (G_AB(a), G_BA(b)) for the D phase."""
    fake_b, fake_a = G_AB(a), G_BA(b)
    terms = {
        "gan_AB": lsgan_g_loss(D_B(fake_b)),
        "gan_BA": lsgan_g_loss(D_A(fake_a)),
        "cycle_A": F.l1_loss(G_BA(fake_b), a),
        "cycle_B": F.l1_loss(G_AB(fake_a), b),
    }
    total = terms["gan_AB"] + terms["gan_BA"] + cycle * (terms["cycle_A"] + terms["cycle_B"])
    if identity > 0:  # G_AB should leave an image already in B alone (and G_BA one in A)
        terms["idt_B"] = F.l1_loss(G_AB(b), b)
        terms["idt_A"] = F.l1_loss(G_BA(a), a)
        total = total + identity * cycle * (terms["idt_A"] + terms["idt_B"])
    return total, terms, (fake_b, fake_a)


def split_domains(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Interleaved A, B, A, B, ... -> (a [N/2, ...], b [N/2, ...])."""
    x = batch.x
    assert x.shape[0] % 2 == 0, f"an unpaired batch holds pairs, got {x.shape[0]} images"
    return x[0::2], x[1::2]


@register(OBJECTIVES, "cyclegan")
class CycleGAN(Objective):
    ema: dict[str, str] = {}  # the paper keeps no moving average of G
    sample_network = "G_AB"

    def __init__(self, cfg: Config, networks: dict[str, nn.Module], kind: str) -> None:
        super().__init__(cfg, networks)
        self.lc = cfg.loss
        seed = cfg.train.seed
        self.pools = {
            "pool_A": ImagePool(cfg.loss.pool, stream(seed, "image_pool", 0)),  # fakes of A, for D_A
            "pool_B": ImagePool(cfg.loss.pool, stream(seed, "image_pool", 1)),  # fakes of B, for D_B
        }
        self._stash: list[tuple[torch.Tensor, ...]] = []  # (a, b, fake_a, fake_b) per G micro-batch

    def optimizers(self) -> dict[str, OptimizerSpec]:
        o = self.cfg.optim
        return {
            "G": OptimizerSpec(("G_AB", "G_BA"), o.lr_g, role="G"),
            "D": OptimizerSpec(("D_A", "D_B"), o.lr_d, role="D"),
        }

    def phases(self) -> list[Phase]:
        # the official order: both generators first (D frozen), then both discriminators on that batch
        return [Phase("Gmain", "G", ("G_AB", "G_BA")), Phase("Dmain", "D", ("D_A", "D_B"), reals=False)]

    def accumulate(self, phase: Phase, batch: Batch | None, ctx: PhaseContext) -> PhaseResult:
        n = self.networks
        if phase.name == "Gmain":
            a, b = split_domains(batch)
            total, terms, (fake_b, fake_a) = generator_terms(
                n["G_AB"], n["G_BA"], n["D_A"], n["D_B"], a, b, self.lc.cycle, self.lc.identity
            )
            backward(total, ctx.gain)
            self._stash.append((a, b, fake_a.detach(), fake_b.detach()))
            return PhaseResult(
                total.detach(), {"g_loss": total.detach(), **{k: v.detach() for k, v in terms.items()}}
            )
        a, b, fake_a, fake_b = self._stash.pop(0)
        fake_a, fake_b = self.pools["pool_A"].query(fake_a), self.pools["pool_B"].query(fake_b)
        d_a_real, d_b_real = n["D_A"](a), n["D_B"](b)
        loss_a = lsgan_d_loss(d_a_real, n["D_A"](fake_a))
        loss_b = lsgan_d_loss(d_b_real, n["D_B"](fake_b))
        total = loss_a + loss_b
        backward(total, ctx.gain)
        stats = {"d_loss": total.detach(), "d_A": loss_a.detach(), "d_B": loss_b.detach(),
                 "d_real": (d_a_real.detach().mean() + d_b_real.detach().mean()) / 2}  # fmt: skip
        return PhaseResult(total.detach(), stats)

    def pictures(self, net: nn.Module, z: torch.Tensor, data) -> torch.Tensor:
        """Rows of fixed A images, their translations G_AB(a) and reconstructions G_BA(G_AB(a))."""
        k = max(1, len(z) // 3)
        a = data.peek(2 * k)[0::2].to(z.device)
        with torch.no_grad():
            fake_b = self.networks["G_AB"](a)
            return torch.cat([a, fake_b, self.networks["G_BA"](fake_b)])

    def state_dict(self) -> dict[str, Any]:
        tensors, values = {}, {}
        for name, pool in self.pools.items():
            t, v = pool.state(name)
            tensors.update(t)
            values.update(v)
        return {"tensors": tensors, "values": values}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = next(self.networks["G_AB"].parameters()).device
        for name, pool in self.pools.items():
            pool.load(name, state["tensors"], state["values"], device)
