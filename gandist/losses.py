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

All are means over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gandist.config import LossConfig
from gandist.kernels import gradient_penalty


@dataclass
class AdversarialLoss:
    cfg: LossConfig

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        name = self.cfg.name
        if name in ("minimax", "nonsaturating"):
            return F.softplus(-real).mean() + F.softplus(fake).mean()
        if name == "lsgan":
            return (
                0.5 * (real - self.cfg.lsgan_b).square().mean()
                + 0.5 * (fake - self.cfg.lsgan_a).square().mean()
            )
        if name in ("wgan", "wgan-gp"):
            return fake.mean() - real.mean()
        if name == "hinge":
            return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
        raise ValueError(f"unknown loss '{name}'")

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        name = self.cfg.name
        if name == "minimax":
            return -F.softplus(fake).mean()  # log(1 - sigmoid(l)) = -softplus(l)
        if name == "nonsaturating":
            return F.softplus(-fake).mean()  # -log sigmoid(l) = softplus(-l)
        if name == "lsgan":
            return 0.5 * (fake - self.cfg.lsgan_c).square().mean()
        if name in ("wgan", "wgan-gp", "hinge"):
            return -fake.mean()
        raise ValueError(f"unknown loss '{name}'")

    @property
    def decision_boundary(self) -> float | None:
        """D output separating 'real' from 'fake' decisions; None for Wasserstein critics."""
        if self.cfg.name in ("minimax", "nonsaturating", "hinge"):
            return 0.0  # logit 0 = probability 1/2; hinge margins are centred on 0
        if self.cfg.name == "lsgan":
            return 0.5 * (self.cfg.lsgan_a + self.cfg.lsgan_b)
        return None

    @property
    def clips_weights(self) -> bool:
        return self.cfg.name == "wgan"


def wgan_gp_penalty(
    D: nn.Module, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat = eps*real + (1-eps)*fake, eps ~ U[0,1] per sample
    (Gulrajani et al. 2017, Alg. 1 lines 6-7). Not multiplied by lambda. Differentiable w.r.t. D's weights."""
    eps_shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(eps_shape, generator=generator, dtype=real.dtype, device="cpu").to(real.device)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
    return gradient_penalty(grad, center=1.0)


def r1_penalty(D: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """E[||grad_x D(x)||_2^2] on real data (Mescheder et al. 2018, Eq. 9, without gamma/2)."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    return gradient_penalty(grad, center=0.0)
