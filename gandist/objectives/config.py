"""The `loss` section of the classic objective: its keys, their ranges and its checks (torch-free).

A model family names its objective (`objective` on its model section class); the objective's class is
then the `loss` section. The classic objective, shared by the classic and growing families, lives beside
this file; a family with an objective of its own keeps both in its folder (`gandist/families/<name>/`).
All register under the objective's name in `gandist.objectives.base.OBJECTIVES`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gandist.config import Config, ConfigError, Section, register_section, setting

# The adversarial losses of the classic objective (gandist/losses.py registers one class per name).
LOSS_NAMES = ("minimax", "nonsaturating", "lsgan", "wgan", "wgan-gp", "hinge", "rpgan")


@register_section("loss", "classic")
@dataclass
class ClassicLoss(Section):
    """GAN, DCGAN, LSGAN, WGAN, WGAN-GP: an adversarial loss, optional R1, drift and lazy regularisation."""

    name: str = setting("nonsaturating", choices=LOSS_NAMES)
    gp_weight: float = setting(10.0, ge=0)  # WGAN-GP lambda, Gulrajani et al. 2017 Alg. 1
    clip: float = setting(0.01, gt=0)  # WGAN weight clipping c, Arjovsky et al. 2017 Alg. 1
    r1_gamma: float = setting(0.0, ge=0)  # R1 on reals, Mescheder et al. 2018 (0 = off)
    r2_gamma: float = setting(0.0, ge=0)  # R2 on fakes, Mescheder et al. 2018; R3GAN pays both (0 = off)
    # G also matches the mean of D's last hidden features on reals and fakes, weighted by this (Salimans et
    # al. 2016, Sec. 3.1); for families whose D exposes its features (0 = off)
    feature_matching: float = setting(0.0, ge=0)
    # GP/R1 every this many generator steps in a phase of its own (Dreg), weighted by the interval and
    # with Adam's lr and betas corrected by c = N / (N + 1) (StyleGAN2, Sec. 3.1); 1 = in the D loss itself
    reg_interval: int = setting(1, gt=0)
    drift: float = setting(0.0, ge=0)  # epsilon_drift * E[D(x)^2], PGGAN Sec. A.1 uses 0.001 (0 = off)
    lsgan_a: float = 0.0  # LSGAN target for fakes in the D loss (Mao et al. 2017, Eq. 9)
    lsgan_b: float = 1.0  # LSGAN target for reals in the D loss
    lsgan_c: float = 1.0  # LSGAN target the generator wants D to output for fakes

    @property
    def penalties(self) -> tuple[str, ...]:
        """The gradient penalties D pays: 'gp' (WGAN-GP), 'r1' and/or 'r2'."""
        on = (("gp", self.name == "wgan-gp"), ("r1", self.r1_gamma > 0), ("r2", self.r2_gamma > 0))
        return tuple(p for p, active in on if active)

    def check(self, cfg: Config) -> None:
        if self.name == "wgan-gp" and getattr(cfg.model, "d_norm", None) == "batch":
            raise ConfigError(
                "loss.name=wgan-gp penalises per-sample gradients, which batch norm in the critic couples; "
                "set model.d_norm=layer or none (Gulrajani et al. 2017, Sec. 4)"
            )
        if self.feature_matching and not getattr(type(cfg.model), "d_features", False):
            raise ConfigError(
                f"loss.feature_matching needs a D that exposes its hidden features; model.name={cfg.model.name} "
                "does not: set loss.feature_matching=0 or use model.name=dcgan"
            )
        if self.lsgan_a == self.lsgan_b and self.name == "lsgan":
            raise ConfigError(
                "loss.lsgan_a and loss.lsgan_b must differ: D needs two targets to tell reals from fakes"
            )


