"""The semi-supervised GAN objective (Odena 2016; Salimans et al. 2016, Sec. 5).

D is a K-class classifier with an extra "fake" class: K + 1 logits l, or K logits with the fake logit fixed
at 0 (Salimans et al.: softmax is invariant to a common shift, so l_{K+1} = 0 loses nothing). With
Z(x) = sum_k exp l_k over the real classes, p(fake | x) = exp l_{K+1} / (Z(x) + exp l_{K+1}).

    L_D = w_s L_supervised + w_u L_unsupervised
    L_supervised   = -E_{(x, y) labelled} log p(y | x, y < K + 1)            (softmax over the K real logits)
    L_unsupervised = -E_{x real} log(1 - p(fake | x)) - E_z log p(fake | G(z))

G: feature matching ||E_x f(x) - E_z f(G(z))||^2 on D's last hidden layer (Sec. 3.1, their code's choice
for semi-supervised MNIST), or the non-saturating -E_z log(1 - p(fake | G(z))). A class-conditional G
also pays -w_c E log p(y | G(z, y)) so that G(z, y) looks like class y (as AC-GAN's generator).

Labelled and unlabelled digits arrive in one batch, the labelled ones with labels >= 0 (the digits source
puts `data.labelled_batch` of them in front), so the supervised term is normalised by the expected count
of labelled digits, which keeps it exact under micro-batching. mode=supervised trains the same D on the
labelled digits alone: the baseline semi-supervised learning must beat.

loss.unsupervised_reals=unlabelled is Salimans et al.'s code (train_mnist_feature_matching.py): the real/fake
terms and feature matching read only the unlabelled rows, normalised by their expected count, with one fake per
unlabelled row (100 labelled + 100 unlabelled reals and 100 fakes per D step; 100 reals and 100 fakes per G
step). Their loss_unl is half of L_unsupervised, so their unlabeled_weight 1 is loss.unsupervised_weight 0.5.
loss.d_average > 0 keeps D_ema, D's weights averaged at that decay per step, which the held-out accuracy reads
(their test_batch reads D's parameters averaged at 0.9999).
"""

from __future__ import annotations

import math

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
    at_least_fp32,
    backward,
    d_steps_warmup,
)
from gandist.registry import register
from gandist.strategies import sum_over_ranks


def with_fake_logit(logits: torch.Tensor, classes: int) -> torch.Tensor:
    """[N, K] (implicit fake, logit 0) or [N, K + 1] -> [N, K + 1] logits, the last one 'fake'."""
    if logits.shape[1] == classes:
        return torch.cat([logits, logits.new_zeros(logits.shape[0], 1)], dim=1)
    assert logits.shape[1] == classes + 1, f"D gives {logits.shape[1]} logits for {classes} classes"
    return logits


def log_p_fake(logits: torch.Tensor, classes: int) -> torch.Tensor:
    """log p(fake | x) [N] = l_{K+1} - logsumexp(l)."""
    full = with_fake_logit(logits, classes)
    return full[:, -1] - torch.logsumexp(full, dim=1)


def log_p_real(logits: torch.Tensor, classes: int) -> torch.Tensor:
    """log(1 - p(fake | x)) [N] = logsumexp(l_1..l_K) - logsumexp(l), computed without 1 - p."""
    full = with_fake_logit(logits, classes)
    return torch.logsumexp(full[:, :classes], dim=1) - torch.logsumexp(full, dim=1)


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor, classes: int, count: float | None = None):
    """Sum over the rows with labels >= 0 of -log p(y | x, real) (softmax of the K class logits), divided by
    `count` (default: the number of labelled rows, i.e. their mean)."""
    mask = labels >= 0
    nll = F.cross_entropy(at_least_fp32(logits[:, :classes]), labels.clamp(min=0), reduction="none")
    total = (nll * mask).sum()
    return total / (mask.sum().clamp(min=1) if count is None else count)


def unsupervised_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor, classes: int) -> torch.Tensor:
    """-mean log(1 - p(fake | x)) over reals - mean log p(fake | G(z)) over fakes."""
    return -log_p_real(at_least_fp32(logits_real), classes).mean() - log_p_fake(at_least_fp32(logits_fake), classes).mean()


def accuracy(D: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: int, batch: int = 512) -> float:
    """Share of x that D (in eval mode, no noise) puts in class y, argmax over the K real classes."""
    was = D.training
    D.eval()
    right = 0
    with torch.no_grad():
        for xs, ys in zip(x.split(batch), y.split(batch)):
            right += int((D(xs)[:, :classes].argmax(1) == ys).sum())
    D.train(was)
    return right / len(x)


def _batch_mean(features: torch.Tensor, ctx: PhaseContext) -> torch.Tensor:
    """The mean feature [F] over the global (micro-)batch. Feature matching is not a mean of per-sample
    terms: a mean over each rank's share, its gradients averaged, would not be one process's loss. Under W ranks
    the sums are added over ranks (differentiably), so every rank computes the global batch's loss."""
    if ctx.world == 1:
        return features.mean(0)
    return sum_over_ranks(features.sum(0), ctx.world) / (features.shape[0] * ctx.world)


def _masked_batch_mean(features: torch.Tensor, mask: torch.Tensor, count: float, ctx: PhaseContext) -> torch.Tensor:
    """The mean feature [F] of the rows where `mask` holds, over the global (micro-)batch, divided by their
    expected count per rank (`count`): exact when the rows split over ranks unevenly (the labelled front)."""
    total = (features * mask[:, None]).sum(0)
    if ctx.world > 1:
        total = sum_over_ranks(total, ctx.world)
    return total / (count * ctx.world)


@register(OBJECTIVES, "sgan")
class SemiSupervised(Objective):
    ema = {"G_ema": "G", "D_ema": "D"}  # every EMA network a run may keep (a run keeps D_ema if loss.d_average)

    def __init__(self, cfg: Config, networks: dict[str, nn.Module], kind: str) -> None:
        super().__init__(cfg, networks)
        self.G, self.D = networks["G"], networks["D"]
        self.lc, self.K = cfg.loss, cfg.model.classes
        self.conditional = cfg.model.conditional
        # labelled digits per batch: the supervised sum over a micro-batch is divided by its expected share
        data = cfg.data
        self.labelled_share = (data.labelled_batch / data.batch_size) if data.labelled_batch else 1.0
        self.unlabelled_only = self.lc.unsupervised_reals == "unlabelled"
        self.ema = {"G_ema": "G", **({"D_ema": "D"} if self.lc.d_average else {})}
        self.ema_decay = {"D_ema": self.lc.d_average} if self.lc.d_average else {}

    def _unlabelled_count(self, ctx: PhaseContext) -> int:
        """Expected unlabelled rows in this micro-batch, and so the fakes it draws (unsupervised_reals=unlabelled)."""
        count = ctx.batch_size * (1 - self.labelled_share)
        if abs(count - round(count)) > 1e-9:
            from gandist.config import ConfigError

            raise ConfigError(
                f"a micro-batch (or rank share) of {ctx.batch_size} rows holds {count:g} unlabelled rows on average; "
                "loss.unsupervised_reals=unlabelled draws one fake per unlabelled row: choose data.batch_size, "
                "data.labelled_batch, train.micro_batch and the rank count so that the count is whole"
            )
        return round(count)

    def optimizers(self) -> dict[str, OptimizerSpec]:
        o = self.cfg.optim
        return {"G": OptimizerSpec(("G",), o.lr_g, role="G"), "D": OptimizerSpec(("D",), o.lr_d, role="D")}

    def phases(self) -> list[Phase]:
        tc = self.cfg.train
        d = [Phase("Dmain", "D", ("D",), repeat=tc.d_steps, warmup=d_steps_warmup(tc))]
        if self.lc.mode == "supervised":
            return d
        # feature matching compares with the features of reals: the G phase draws a batch of its own
        return d + [Phase("Gmain", "G", ("G",), reals=self.lc.name == "feature_matching")]

    def _generate(self, ctx: PhaseContext, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = ctx.latents(n)
        if not self.conditional:
            return self.G(z), None
        y = ctx.randint(self.K, n)
        return self.G(z, y), y

    def accumulate(self, phase: Phase, batch: Batch | None, ctx: PhaseContext) -> PhaseResult:
        if phase.name == "Gmain":
            return self._g_main(batch, ctx)
        return self._d_main(batch, ctx)

    def _d_main(self, batch: Batch, ctx: PhaseContext) -> PhaseResult:
        lc, K = self.lc, self.K
        logits_real = self.D(batch.x)
        sup = supervised_loss(logits_real, batch.labels, K, count=self.labelled_share * ctx.batch_size)
        total = lc.supervised_weight * sup
        stats = {"sup_loss": sup.detach()}
        mask = batch.labels >= 0
        correct = (logits_real.detach()[:, :K].argmax(1) == batch.labels) & mask
        # over the expected labelled count, as the loss: a micro-batch or rank without labelled digits adds 0
        # to a mean over the step that comes out as the labelled digits' accuracy
        stats["train_acc"] = correct.sum() / (self.labelled_share * ctx.batch_size)
        if lc.mode == "semi":
            n_fake = self._unlabelled_count(ctx) if self.unlabelled_only else None
            with torch.no_grad():
                fake, _ = self._generate(ctx, n_fake)
            logits_fake = self.D(fake)
            if self.unlabelled_only:  # the unlabelled rows' mean, over their expected count (exact in any split)
                log_real = log_p_real(at_least_fp32(logits_real), K)
                real_term = -(log_real * ~mask).sum() / n_fake
                unsup = real_term - log_p_fake(at_least_fp32(logits_fake), K).mean()
                pr = (log_real.detach().exp() * ~mask).sum() / n_fake
                real_right = (((log_real.detach() > math.log(0.5)) & ~mask).sum() / n_fake).float()
            else:
                unsup = unsupervised_loss(logits_real, logits_fake, K)
                pr_rows = log_p_real(logits_real.detach(), K).exp()
                pr, real_right = pr_rows.mean(), (pr_rows > 0.5).float().mean()
            total = total + lc.unsupervised_weight * unsup
            pf = log_p_fake(logits_fake.detach(), K).exp()
            stats.update(unsup_loss=unsup.detach(), d_real=pr, d_fake=1 - pf.mean(),
                         d_acc=(real_right + (pf > 0.5).float().mean()) / 2)  # fmt: skip
        stats["d_loss"] = total.detach()
        backward(total, ctx.gain)
        return PhaseResult(total.detach(), stats)

    def _g_main(self, batch: Batch | None, ctx: PhaseContext) -> PhaseResult:
        n_fake = self._unlabelled_count(ctx) if self.unlabelled_only else None
        fake, y = self._generate(ctx, n_fake)
        logits_fake, f_fake = self.D(fake, with_features=True)
        if self.lc.name == "feature_matching":
            with torch.no_grad():
                _, f_real = self.D(batch.x, with_features=True)
            if self.unlabelled_only:  # the unlabelled rows' mean feature (their mom_real on x_unl)
                real_mean = _masked_batch_mean(at_least_fp32(f_real), batch.labels < 0, n_fake, ctx)
            else:
                real_mean = _batch_mean(at_least_fp32(f_real), ctx)
            loss = (real_mean - _batch_mean(at_least_fp32(f_fake), ctx)).square().mean()
        else:
            loss = -log_p_real(at_least_fp32(logits_fake), self.K).mean()
        stats = {"adv_loss": loss.detach()}
        if y is not None and self.lc.class_weight > 0:
            ce = F.cross_entropy(at_least_fp32(logits_fake[:, : self.K]), y)
            loss = loss + self.lc.class_weight * ce
            stats["class_loss"] = ce.detach()
        stats["g_loss"] = loss.detach()
        backward(loss, ctx.gain)
        return PhaseResult(loss.detach(), stats)

    @classmethod
    def checkpoint_metrics(cls, path) -> dict:
        return {"classifier": checkpoint_accuracy(path)}


def checkpoint_accuracy(path, which: str | None = None) -> dict:
    """D's classification accuracy on the held-out digits of a semi-supervised GAN checkpoint (what
    `gandist eval` reports for this family): {'accuracy', 'errors', 'heldout', 'labelled', 'network'}. `which` (None):
    D_ema where the run kept one (loss.d_average > 0, the averaged D Salimans et al. test), else D."""
    from gandist.data import build_dataset
    from gandist.errors import UserError
    from gandist.load import load_network

    def refuse(cfg, p) -> None:
        if cfg.model.name != "sgan":
            raise UserError(
                f"classifier accuracy is a semi-supervised GAN metric; '{p}' holds a {cfg.model.name} model "
                "(drop 'accuracy' from --metrics)"
            )
        if not getattr(cfg.data, "has_heldout", False):
            raise UserError(
                f"the run of '{p}' held out no digits (data.holdout=0): there is nothing to test D on"
            )

    loaded = load_network(path, "D", refuse)
    if which is None:
        which = "D_ema" if getattr(loaded.cfg.loss, "d_average", 0.0) else "D"
    if which != "D":
        loaded = load_network(path, which)
    D, cfg = loaded.net, loaded.cfg
    source = build_dataset(cfg.data, cfg.train.seed)
    x, y = source.heldout()
    labelled = len(source.labelled) if source.labelled is not None else source.size
    acc = accuracy(D, x, y, cfg.model.classes)
    # errors: the count Salimans et al.'s Table 1 reports (misclassified test digits of MNIST's 10,000)
    return {"accuracy": acc, "errors": len(x) - round(acc * len(x)), "heldout": len(x), "labelled": labelled,
            "network": which}  # fmt: skip
