"""Adversarial losses and regularisers.

Every loss works on D's raw outputs (logits for the probabilistic losses, critic values for WGAN and
hinge). With D(x) = sigmoid(l): log D = -softplus(-l) and log(1 - D) = -softplus(l), which is exact
and never takes log(0).

| name          | D minimises                                  | G minimises                    | source                      |
|---------------|----------------------------------------------|--------------------------------|-----------------------------|
| minimax       | -log D(x) - log(1 - D(G(z)))                  | log(1 - D(G(z)))               | Goodfellow et al. 2014 Eq.1 |
| nonsaturating | same as minimax                              | -log D(G(z))                   | Goodfellow et al. 2014 Sec.3|
| lsgan         | 1/2 (D(x) - b)^2 + 1/2 (D(G(z)) - a)^2        | 1/2 (D(G(z)) - c)^2            | Mao et al. 2017 Eq. 9       |
| wgan          | D(G(z)) - D(x), weights clipped to [-c, c]    | -D(G(z))                       | Arjovsky et al. 2017 Alg. 1 |
| wgan-gp       | wgan + lambda (||grad D(x_hat)|| - 1)^2       | -D(G(z))                       | Gulrajani et al. 2017 Alg.1 |
| hinge         | relu(1 - D(x)) + relu(1 + D(G(z)))            | -D(G(z))                       | Lim & Ye 2017; Miyato 2018  |
| rpgan         | softplus(D(G(z_i)) - D(x_i))                  | softplus(D(x_i) - D(G(z_i)))   | Jolicoeur-Martineau 2019; Huang et al. 2025 Eq. 2 |

All are means over the batch (rpgan: over the pairs (x_i, G(z_i)), so real and fake batches have one size).
R3GAN pays rpgan with zero-centred penalties on both sides: gamma/2 E||grad D(x)||^2 on reals (R1) and
gamma/2 E||grad D(G(z))||^2 on fakes (R2) (Huang et al. 2025, Sec. 2.3), `loss.r1_gamma` and `loss.r2_gamma`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gandist.kernels import gradient_penalty
from gandist.objectives.config import ClassicLoss
from gandist.registry import register

LOSSES: dict[str, type[AdversarialLoss]] = {}


class AdversarialLoss:
    """One row of the table above. `d_loss(real, fake)` and `g_loss(fake, real)` take D's raw outputs [N]
    (`real` only for the relativistic losses)."""

    clips_weights = False  # WGAN: clip D's weights to [-c, c] after every update
    decision_boundary: float | None = 0.0  # D output separating 'real' from 'fake'; None for critics
    gradient_penalty = False  # WGAN-GP: the loss adds the penalty on interpolates
    # What the training-health advice reads, so that it names no loss itself: the registered loss to
    # switch to when G's gradient saturates (`unsaturated`), and the one that replaces this loss's
    # weight clipping by the gradient penalty (`penalised`).
    unsaturated: str | None = None
    penalised: str | None = None
    # Relativistic pairing (rpgan): G's loss reads D on reals as well, paired sample by sample with the fakes,
    # so the objective draws reals for the G phase and calls `g_loss(fake, real)`. The collapse advice reads it
    # to name the loss that fights mode dropping (Sun et al. 2020: RpGAN has no mode-dropping local optima).
    relativistic = False

    def __init__(self, cfg: ClassicLoss) -> None:
        self.cfg = cfg

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def display(self, logits: torch.Tensor) -> torch.Tensor:
        """Mean D output shown in logs: the raw value (critic score, least-squares output)."""
        return logits.mean()


def build_loss(cfg: ClassicLoss) -> AdversarialLoss:
    return LOSSES[cfg.name](cfg)


class _Logistic(AdversarialLoss):
    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def display(self, logits: torch.Tensor) -> torch.Tensor:
        """Mean probability D(x) = sigmoid(logit)."""
        return torch.sigmoid(logits).mean()


@register(LOSSES, "minimax")
class Minimax(_Logistic):
    unsaturated = "nonsaturating"  # the same D, G's loss -log D(G(z)) (Goodfellow et al. 2014, Sec. 3)

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        return -F.softplus(fake).mean()  # log(1 - sigmoid(l)) = -softplus(l)


@register(LOSSES, "nonsaturating")
class NonSaturating(_Logistic):
    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        return F.softplus(-fake).mean()  # -log sigmoid(l) = softplus(-l)


@register(LOSSES, "lsgan")
class LeastSquares(AdversarialLoss):
    def __init__(self, cfg: ClassicLoss) -> None:
        super().__init__(cfg)
        self.decision_boundary = 0.5 * (cfg.lsgan_a + cfg.lsgan_b)

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return (
            0.5 * (real - self.cfg.lsgan_b).square().mean() + 0.5 * (fake - self.cfg.lsgan_a).square().mean()
        )

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        return 0.5 * (fake - self.cfg.lsgan_c).square().mean()


@register(LOSSES, "wgan")
class Wasserstein(AdversarialLoss):
    clips_weights = True
    decision_boundary = None  # critics score, they do not classify
    penalised = "wgan-gp"

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return fake.mean() - real.mean()

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        return -fake.mean()


@register(LOSSES, "wgan-gp")
class WassersteinGP(Wasserstein):
    clips_weights = False  # the gradient penalty replaces clipping
    gradient_penalty = True
    penalised = None


@register(LOSSES, "hinge")
class Hinge(AdversarialLoss):
    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        return -fake.mean()


@register(LOSSES, "rpgan")
class RelativisticPairing(AdversarialLoss):
    """RpGAN: D wants each real scored above its paired fake, G the reverse. Only differences of D's outputs
    enter, so like a critic D has no decision boundary of its own (its logs report the gap E[D(x) - D(G(z))])."""

    decision_boundary = None
    relativistic = True

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        _same_pairs(real, fake)
        return F.softplus(fake - real).mean()

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        if real is None:
            raise ValueError("rpgan's generator loss pairs each fake with a real: pass D's outputs on reals")
        _same_pairs(real, fake)
        return F.softplus(real - fake).mean()


def _same_pairs(real: torch.Tensor, fake: torch.Tensor) -> None:
    assert real.shape == fake.shape, f"rpgan pairs reals {list(real.shape)} with fakes {list(fake.shape)} one to one"


def wgan_gp_penalty(
    D: nn.Module, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None,
    eps: torch.Tensor | None = None,
) -> torch.Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat = eps*real + (1-eps)*fake, eps ~ U[0,1] per sample
    (Gulrajani et al. 2017, Alg. 1 lines 6-7). Not multiplied by lambda. Differentiable w.r.t. D's weights.
    `eps` [N] may be given (the loop's draw); else it is drawn from `generator`."""
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    if eps is None:
        eps = torch.rand(eps_shape, generator=generator, dtype=real.dtype, device="cpu")
    eps = eps.reshape(eps_shape).to(real.device, real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
    return gradient_penalty(grad, center=1.0)


def r1_penalty(D: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """E[||grad_x D(x)||_2^2] on real data (Mescheder et al. 2018, Eq. 9, without gamma/2)."""
    return _zero_centred(D, real)


def r2_penalty(D: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """E[||grad_x D(x)||_2^2] on generated data, G held fixed (Mescheder et al. 2018, Eq. 10; R3GAN, Huang
    et al. 2025, Eq. 5), without gamma/2. Differentiable w.r.t. D's weights, never reaches G."""
    return _zero_centred(D, fake)


def _zero_centred(D: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    return gradient_penalty(grad, center=0.0)
