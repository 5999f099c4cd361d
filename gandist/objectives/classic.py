"""The classic objective: GAN, DCGAN, LSGAN, WGAN and WGAN-GP on one G and one D.

Each generator step (Goodfellow et al. 2014, Algorithm 1): k = train.d_steps D phases, each on a
fresh batch of reals and of fakes G(z) drawn without gradients; then one G phase on fresh latents with
D frozen. WGAN clips D's weights after every D update (Arjovsky et al. 2017, Algorithm 1 line 7) and its
code trains the critic 100 times on the first 25 generator steps and every 500th (train.d_steps_warmup);
WGAN-GP adds lambda (||grad D(x_hat)|| - 1)^2 (Gulrajani et al. 2017, Algorithm 1); R1 adds
gamma/2 E||grad D(x)||^2 on reals (Mescheder et al. 2018), R2 the same on fakes (R3GAN, Huang et al.
2025); drift adds epsilon E[D(x)^2] (PGGAN A.1).
A penalty every step belongs to the D loss (phase Dboth); every N steps it is a phase of its own (Dreg).
The G phase draws reals too when its loss reads them: a relativistic loss (rpgan pairs D(x_i) with
D(G(z_i))) or feature matching (G matches the batch means of D's last hidden features on reals).

R1 in Dboth differentiates the main pass on the reals instead of running D on them a second time (the
official StyleGAN2 loss's Dmain+Dreg at reg_interval 1; rosinality's train.py): the reals enter D with
requires_grad, and grad_x sum D(x) is taken of that same forward with create_graph. The gradients are those of
the two passes up to float rounding (tests/test_r1_reuse.py, float64); it applies where the main pass is the
penalty's pass: a plain fp32 D (not compiled, no engine wrapper, no autocast: the penalty runs in fp32 and
eager, so under bf16/fp16 or torch.compile R1 keeps its own pass). StyleGAN 32 px, width 64, batch 16: one D
forward on the reals less per step.
"""

from __future__ import annotations

import torch
from torch import nn

from gandist.config import Config
from gandist.data.base import Batch
from gandist.kernels import gradient_penalty
from gandist.losses import build_loss, r1_penalty, r2_penalty, wgan_gp_penalty
from gandist.objectives.base import (
    OBJECTIVES,
    Objective,
    OptimizerSpec,
    Phase,
    PhaseContext,
    PhaseResult,
    at_least_fp32,
    backward,
    d_steps_warmup,
    uncompiled,
)
from gandist.registry import register


def _flat(logits: torch.Tensor) -> torch.Tensor:
    return logits.reshape(logits.shape[0])


@register(OBJECTIVES, "classic")
class Classic(Objective):
    def __init__(self, cfg: Config, networks: dict[str, nn.Module], kind: str) -> None:
        super().__init__(cfg, networks)
        self.G, self.D = networks["G"], networks["D"]
        self.D_penalty = uncompiled(self.D)  # double backward runs eager
        self.lc = cfg.loss
        self.loss = build_loss(cfg.loss)
        self.penalties = cfg.loss.penalties
        self.lazy = bool(self.penalties) and cfg.loss.reg_interval > 1
        # R1 from the main pass on the reals (see the module docstring); False forces the second pass
        self.reuse_reals = "r1" in self.penalties

    def optimizers(self) -> dict[str, OptimizerSpec]:
        o = self.cfg.optim
        return {
            "G": OptimizerSpec(("G",), o.lr_g, role="G"),
            "D": OptimizerSpec(("D",), o.lr_d, self.lc.reg_interval if self.lazy else 1, role="D"),
        }

    def phases(self) -> list[Phase]:
        k, n = self.cfg.train.d_steps, self.lc.reg_interval
        d = [Phase("Dboth" if self.penalties and not self.lazy else "Dmain", "D", ("D",), repeat=k,
                   warmup=d_steps_warmup(self.cfg.train))]  # fmt: skip
        if self.lazy:
            d.append(Phase("Dreg", "D", ("D",), interval=n, gain=float(n)))
        return d + [Phase("Gmain", "G", ("G",), reals=self.g_reads_reals)]

    @property
    def g_reads_reals(self) -> bool:
        return self.loss.relativistic or self.lc.feature_matching > 0

    # -- the phases --------------------------------------------------------------------------------
    def accumulate(self, phase: Phase, batch: Batch | None, ctx: PhaseContext) -> PhaseResult:
        if phase.name == "Gmain":
            return self._g_main(batch, ctx)
        if phase.name == "Dreg":
            return self._d_reg(batch.x, ctx)
        return self._d_main(batch.x, ctx, with_penalty=phase.name == "Dboth")

    def _fakes(self, ctx: PhaseContext) -> torch.Tensor:
        with torch.no_grad():
            return self.G(ctx.latents())

    def _reuses_reals(self, real: torch.Tensor, ctx: PhaseContext) -> bool:
        """Whether this Dboth pass takes R1 from the main forward on the reals: only where that forward is
        exactly the penalty's (fp32 or float64, eager, the plain module, no autocast)."""
        plain = self.D_penalty is self.D and getattr(self.D, "module", self.D) is self.D
        return (self.reuse_reals and plain and real.dtype in (torch.float32, torch.float64)
                and not torch.is_autocast_enabled(ctx.device.type))  # fmt: skip

    def _penalty_terms(self, real: torch.Tensor, fake: torch.Tensor | None, ctx: PhaseContext, main=None):
        """[(weighted penalty, stats)]: GP on interpolates and/or R1 on reals. Always in fp32: under bf16 or
        fp16 autocast the gradient of a gradient is too coarse (or overflows) to penalise. `main`: (reals that
        require grad, D's flat outputs on them) of the main pass, for R1 without a second forward."""
        with torch.autocast(ctx.device.type, enabled=False):
            return self._penalty_terms_fp32(
                at_least_fp32(real), None if fake is None else at_least_fp32(fake), ctx, main
            )

    def _penalty_terms_fp32(
        self, real: torch.Tensor, fake: torch.Tensor | None, ctx: PhaseContext, main=None
    ):
        terms = []
        if "gp" in self.penalties:
            gp = wgan_gp_penalty(self.D_penalty, real, fake, eps=ctx.uniform(real.shape[0]))
            terms.append((self.lc.gp_weight * gp, {"gp": gp.detach()}))
        if "r1" in self.penalties:
            if main is None:
                r1 = r1_penalty(self.D_penalty, real)
            else:  # E ||grad_x D(x)||^2 of the main pass's graph (r1_penalty's definition, one forward fewer)
                x, d_x = main
                (grad,) = torch.autograd.grad(d_x.sum(), x, create_graph=True)
                r1 = gradient_penalty(grad, center=0.0)
            terms.append((0.5 * self.lc.r1_gamma * r1, {"r1": r1.detach()}))
        if "r2" in self.penalties:
            r2 = r2_penalty(self.D_penalty, fake)
            terms.append((0.5 * self.lc.r2_gamma * r2, {"r2": r2.detach()}))
        return terms

    def _penalty(self, real: torch.Tensor, fake: torch.Tensor | None, ctx: PhaseContext):
        """(sum of the weighted penalties, their stats)."""
        total, stats = None, {}
        for weighted, s in self._penalty_terms(real, fake, ctx):
            total = weighted if total is None else total + weighted
            stats.update(s)
        return total, stats

    def _d_main(self, real: torch.Tensor, ctx: PhaseContext, with_penalty: bool) -> PhaseResult:
        fake = self._fakes(ctx)
        reuse = with_penalty and self._reuses_reals(real, ctx)
        if reuse:
            real = real.detach().requires_grad_(True)
        d_real, d_fake = _flat(self.D(real)), _flat(self.D(fake))
        loss = self.loss.d_loss(d_real, d_fake)
        r, f = d_real.detach(), d_fake.detach()
        stats = {"d_loss": loss.detach(), "d_real": self.loss.display(r), "d_fake": self.loss.display(f)}
        boundary = self.loss.decision_boundary
        if boundary is not None:  # share of reals and fakes D classifies correctly
            stats["d_acc"] = ((r > boundary).float().mean() + (f < boundary).float().mean()) / 2
        else:  # Wasserstein critics score, not classify: report the critic gap E[D(x)] - E[D(G(z))]
            stats["critic_gap"] = r.mean() - f.mean()
        total = loss
        if self.lc.drift > 0:
            total = total + self.lc.drift * d_real.square().mean()
        if with_penalty:
            main = (real, d_real) if reuse else None
            for weighted, pstats in self._penalty_terms(real, fake, ctx, main):
                total = total + weighted
                stats.update(pstats)
        backward(total, ctx.gain)
        return PhaseResult(total.detach(), stats)

    def _d_reg(self, real: torch.Tensor, ctx: PhaseContext) -> PhaseResult:
        fake = self._fakes(ctx) if {"gp", "r2"} & set(self.penalties) else None
        weighted, stats = self._penalty(real, fake, ctx)
        backward(weighted, ctx.gain)
        return PhaseResult(weighted.detach(), stats)

    def _g_main(self, batch: Batch | None, ctx: PhaseContext) -> PhaseResult:
        fake = self.G(ctx.latents())
        real = batch.x if batch is not None else None
        d_real = _flat(self.D(real)) if self.loss.relativistic else None
        loss = self.loss.g_loss(_flat(self.D(fake)), d_real)
        stats = {"g_loss": loss.detach()}
        if self.lc.feature_matching > 0:
            # Salimans et al. 2016, Eq. in Sec. 3.1: ||E f(x) - E f(G(z))||_2^2 on D's last hidden layer
            features = self.D_penalty.features  # the module's own method, past any compile wrapper
            fm = (features(real).mean(0) - features(fake).mean(0)).square().sum()
            loss = loss + self.lc.feature_matching * fm
            stats["feature_matching"] = fm.detach()
        backward(loss, ctx.gain)
        return PhaseResult(loss.detach(), stats)

    def after_step(self, phase: Phase) -> None:
        if self.loss.clips_weights and "D" in phase.trains:
            with torch.no_grad():
                for p in self.D.parameters():
                    p.clamp_(-self.lc.clip, self.lc.clip)
